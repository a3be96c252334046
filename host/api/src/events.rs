//! The event center over HTTP: event types, disposal workflows, events (search, report,
//! detail, statistics) and the catalogue of which rules raise which events. Tasks, messages
//! and notification settings live in their own modules and are routed from here.
//!
//! Event types and workflows are configuration (`event_type.*`, `workflow.*`); events carry
//! their organisation and region and every read is the policy's `event.read` on them, so a
//! dispatcher of one district never sees another district's events.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lotus_model::scope::{Scope, parse_region, region_covers};
use lotus_operations::rule::{ActionSpec, Trigger};
use lotus_operations::{CenterError, Operations, RuleDefinition, Submission, Submitted};
use lotus_storage::{EventFilter, EventGroup, EventRow, StorageError, TimelineRow};
use lotus_workflow::{
    EventDraft, EventType, GeoPoint, Level, ValidationErrors, WorkflowDefinition,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Path, Query};
use crate::products::{PageQuery, Paged};
use crate::tasks::Task;

/// The running operations center, or 503 on a node without one.
pub(crate) fn operations(state: &ApiState) -> ApiResult<&Operations> {
    state.operations.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs no operations center",
        )
    })
}

/// What the event center refused, as the HTTP status that says so.
pub(crate) fn center_error(e: CenterError) -> ApiError {
    match e {
        CenterError::Invalid(m) => ApiError::unprocessable(m),
        CenterError::NotFound(m) => ApiError::not_found(m),
        CenterError::Conflict(m) => ApiError::conflict(m),
        CenterError::Storage(s) => stored(s),
    }
}

/// A storage error, where `Invalid` is the caller's mistake (a filter value, a kind) rather
/// than an outage.
pub(crate) fn stored(e: StorageError) -> ApiError {
    match e {
        StorageError::Invalid(m) => ApiError::unprocessable(m),
        other => other.into(),
    }
}

/// A 422 problem that lists every problem of a document (`errors: [{step?, field, message}]`),
/// so an author fixes them all in one round.
pub(crate) fn validation_problem(what: &str, errors: &ValidationErrors) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": "Unprocessable Entity",
        "status": 422,
        "detail": format!("{what} is not valid: {errors}"),
        "errors": errors,
    });
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// Is `code` an identifier of an event type or workflow (`[a-z0-9_.-]{1,64}`)?
pub(crate) fn is_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

fn now_ms() -> i64 {
    lotus_device::now_ms()
}

// --- event types ---------------------------------------------------------------------------

/// Every event type.
#[derive(Serialize, ToSchema)]
pub struct EventTypeList {
    /// Event type definitions (`code`, `name`, `defaultLevel`, `fields`, `merge`, …), by code.
    pub items: Vec<Value>,
}

/// Every event type, by code.
#[utoipa::path(get, path = "/api/v1/event-types", tag = "events", security(("bearer" = [])),
    responses((status = 200, body = EventTypeList)))]
pub async fn list_event_types(
    State(state): State<ApiState>,
    user: Authenticated,
) -> ApiResult<Json<EventTypeList>> {
    crate::authz::global(&state, &user, "event_type", "read", "*")?;
    let ops = operations(&state)?;
    let items = ops
        .store
        .list_event_types()
        .await?
        .into_iter()
        .map(|(_, def)| def)
        .collect();
    Ok(Json(EventTypeList { items }))
}

/// An event type.
#[utoipa::path(get, path = "/api/v1/event-types/{code}", tag = "events", security(("bearer" = [])),
    params(("code" = String, Path, example = "water.main_burst")),
    responses((status = 200, description = "the event type", body = Value),
        (status = 404, body = crate::problem::Problem)))]
pub async fn get_event_type(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(code): Path<String>,
) -> ApiResult<Json<Value>> {
    crate::authz::global(&state, &user, "event_type", "read", &code)?;
    operations(&state)?
        .store
        .get_event_type(&code)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "event type `{code}` does not exist: create it with PUT /api/v1/event-types/{code}"
            ))
        })
}

/// Create or replace an event type: its fields, default level, merging of repeated reports,
/// and the levels that are closed at once or kept out of dispatch. Every problem of the
/// definition is listed in one 422 (`errors`).
#[utoipa::path(put, path = "/api/v1/event-types/{code}", tag = "events", security(("bearer" = [])),
    params(("code" = String, Path, example = "water.main_burst")),
    request_body(content = Value, description = "{code, name, description?, defaultLevel: 1..4, fields?: [{name, label, kind, required}], merge?: {windowSecs, radiusMeters}, autoClose?: level, isolate?: level}"),
    responses((status = 200, description = "replaced", body = Value), (status = 201, description = "created", body = Value),
        (status = 422, body = crate::problem::Problem)))]
pub async fn put_event_type(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(code): Path<String>,
    Json(ty): Json<EventType>,
) -> ApiResult<Response> {
    crate::authz::global(&state, &user, "event_type", "write", &code)?;
    let ops = operations(&state)?;
    if ty.code != code {
        return Err(ApiError::unprocessable(format!(
            "code: the body names `{}` but the path names `{code}`; they must be the same",
            ty.code
        )));
    }
    if let Err(errors) = ty.validate() {
        return Ok(validation_problem(&format!("event type `{code}`"), &errors));
    }
    let existed = ops.store.get_event_type(&code).await?.is_some();
    let value = serde_json::to_value(&ty)
        .map_err(|e| ApiError::unprocessable(format!("the event type cannot be stored: {e}")))?;
    ops.store.put_event_type(&code, &value).await?;
    tracing::info!(event_type = %code, by = %user.user.username, "event type saved");
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(value)).into_response())
}

/// Delete an event type. Events of the type keep their code; new reports of it are refused.
#[utoipa::path(delete, path = "/api/v1/event-types/{code}", tag = "events", security(("bearer" = [])),
    params(("code" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn delete_event_type(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(code): Path<String>,
) -> ApiResult<StatusCode> {
    crate::authz::global(&state, &user, "event_type", "delete", &code)?;
    if !operations(&state)?.store.delete_event_type(&code).await? {
        return Err(ApiError::not_found(format!(
            "event type `{code}` does not exist"
        )));
    }
    tracing::info!(event_type = %code, by = %user.user.username, "event type deleted");
    Ok(StatusCode::NO_CONTENT)
}

// --- workflows -----------------------------------------------------------------------------

/// One version of a disposal workflow.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    pub id: String,
    pub version: i64,
    pub name: String,
    /// The event type it disposes of.
    pub event_type: String,
    /// Whether new events start it (all versions share it).
    pub enabled: bool,
    /// The definition (`appliesTo`, `start`, `steps`), as JSON.
    pub definition: Value,
    pub created_by: String,
    pub created_at: i64,
}

impl From<lotus_storage::WorkflowDefinitionRow> for Workflow {
    fn from(r: lotus_storage::WorkflowDefinitionRow) -> Self {
        Workflow {
            name: r.definition["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            id: r.id,
            version: r.version,
            event_type: r.event_type,
            enabled: r.enabled,
            definition: r.definition,
            created_by: r.created_by,
            created_at: r.created_at,
        }
    }
}

/// The latest version of every workflow.
#[derive(Serialize, ToSchema)]
pub struct WorkflowList {
    pub items: Vec<Workflow>,
}

/// The latest version of every workflow, by id.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "events", security(("bearer" = [])),
    responses((status = 200, body = WorkflowList)))]
pub async fn list_workflows(
    State(state): State<ApiState>,
    user: Authenticated,
) -> ApiResult<Json<WorkflowList>> {
    crate::authz::global(&state, &user, "workflow", "read", "*")?;
    let rows = operations(&state)?
        .store
        .latest_workflow_definitions()
        .await?;
    Ok(Json(WorkflowList {
        items: rows.into_iter().map(Workflow::from).collect(),
    }))
}

/// Is the body YAML (by its content type)? Anything else is read as JSON.
fn is_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| {
            matches!(
                v.as_str(),
                "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
            )
        })
}

/// Save a workflow definition as a new version (1 for a new id), JSON or — with
/// `Content-Type: application/yaml` — YAML. The node numbers the versions; the document's
/// `version` is replaced by the stored one. Every problem of the definition is listed in one
/// 422 (`errors: [{step, field, message}]`); the event type must exist.
#[utoipa::path(post, path = "/api/v1/workflows", tag = "events", security(("bearer" = [])),
    request_body(content = Value, description = "{id, name, version, appliesTo: {eventType, levels?}, start, steps: [{id, name, assignee, deadlineSecs?, actions?, next, onReject?, escalation?}]} as JSON or YAML (application/yaml)"),
    responses((status = 201, body = Workflow), (status = 422, body = crate::problem::Problem)))]
pub async fn create_workflow(
    State(state): State<ApiState>,
    user: Authenticated,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    crate::authz::global(&state, &user, "workflow", "write", "*")?;
    let ops = operations(&state)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::unprocessable("the workflow must be UTF-8 text"))?;
    let mut def = if is_yaml(&headers) {
        WorkflowDefinition::from_yaml(text).map_err(|e| {
            ApiError::unprocessable(format!("the workflow is not a valid YAML definition: {e}"))
        })?
    } else {
        WorkflowDefinition::from_json(text).map_err(|e| {
            ApiError::unprocessable(format!(
                "the workflow is not a valid JSON definition ({e}); send YAML with \
                 Content-Type: application/yaml"
            ))
        })?
    };
    if let Err(errors) = def.validate() {
        return Ok(validation_problem(
            &format!("workflow `{}`", def.id),
            &errors,
        ));
    }
    ops.center
        .event_type(&def.applies_to.event_type)
        .await
        .map_err(|e| match e {
            CenterError::Invalid(m) => ApiError::unprocessable(format!("appliesTo.eventType: {m}")),
            other => center_error(other),
        })?;
    // The stored version is the one instances refer to; the document says the same.
    let next = ops
        .store
        .workflow_definition(&def.id, None)
        .await?
        .map(|r| r.version + 1)
        .unwrap_or(1);
    def.version = u32::try_from(next).unwrap_or(u32::MAX);
    let value = serde_json::to_value(&def)
        .map_err(|e| ApiError::unprocessable(format!("the workflow cannot be stored: {e}")))?;
    let version = ops
        .store
        .put_workflow_definition(
            &def.id,
            &def.applies_to.event_type,
            &value,
            &user.user.username,
        )
        .await?;
    let row = ops
        .store
        .workflow_definition(&def.id, Some(version))
        .await?
        .ok_or_else(|| {
            ApiError::conflict(format!("workflow `{}` was deleted meanwhile", def.id))
        })?;
    tracing::info!(workflow = %def.id, version, by = %user.user.username, "workflow saved");
    Ok((StatusCode::CREATED, Json(Workflow::from(row))).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct VersionQuery {
    /// A version; the latest when absent.
    pub version: Option<i64>,
}

/// One version of a workflow (the latest unless `version` is given).
#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path), VersionQuery),
    responses((status = 200, body = Workflow), (status = 404, body = crate::problem::Problem)))]
pub async fn get_workflow(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Workflow>> {
    crate::authz::global(&state, &user, "workflow", "read", &id)?;
    let row = operations(&state)?
        .store
        .workflow_definition(&id, q.version)
        .await?
        .ok_or_else(|| match q.version {
            Some(v) => ApiError::not_found(format!("workflow `{id}` has no version {v}")),
            None => ApiError::not_found(format!("workflow `{id}` does not exist")),
        })?;
    Ok(Json(row.into()))
}

async fn set_enabled(
    state: ApiState,
    user: Authenticated,
    id: String,
    enabled: bool,
) -> ApiResult<Json<Workflow>> {
    crate::authz::global(&state, &user, "workflow", "write", &id)?;
    let ops = operations(&state)?;
    ops.store.set_workflow_enabled(&id, enabled).await?;
    let row = ops
        .store
        .workflow_definition(&id, None)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("workflow `{id}` does not exist")))?;
    tracing::info!(workflow = %id, enabled, by = %user.user.username, "workflow switched");
    Ok(Json(row.into()))
}

/// Let new events start this workflow again (running ones were never stopped).
#[utoipa::path(post, path = "/api/v1/workflows/{id}/enable", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Workflow), (status = 404, body = crate::problem::Problem)))]
pub async fn enable_workflow(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Workflow>> {
    set_enabled(state, user, id, true).await
}

/// Stop new events from starting this workflow; workflows already running go on.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/disable", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Workflow), (status = 404, body = crate::problem::Problem)))]
pub async fn disable_workflow(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Workflow>> {
    set_enabled(state, user, id, false).await
}

// --- events --------------------------------------------------------------------------------

/// A point on the map (WGS 84 degrees).
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

/// An event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: i64,
    /// `E` + UTC day + `-` + the day's sequence, e.g. `E20261126-000042`.
    pub number: String,
    #[serde(rename = "type")]
    pub type_code: String,
    pub title: String,
    /// 1 (critical) to 4 (general).
    pub level: i64,
    /// new, processing, closed or isolated.
    pub state: String,
    /// How it ended (`resolved`, `rejected`, `auto-closed`, …), once closed.
    pub outcome: Option<String>,
    pub region: String,
    pub org: String,
    pub location: Option<Location>,
    pub fields: Value,
    /// Who reported it.
    pub source: Value,
    pub rule_id: Option<String>,
    pub alarm_id: Option<i64>,
    /// How many later reports were merged into it.
    pub merged_count: i64,
    pub created_at: i64,
    /// The latest report.
    pub last_at: i64,
    pub closed_at: Option<i64>,
}

impl From<EventRow> for Event {
    fn from(r: EventRow) -> Self {
        Event {
            id: r.id,
            number: r.number,
            type_code: r.type_code,
            title: r.title,
            level: r.level,
            state: r.state,
            outcome: r.outcome,
            region: r.region,
            org: r.org,
            location: match (r.lat, r.lon) {
                (Some(lat), Some(lon)) => Some(Location { lat, lon }),
                _ => None,
            },
            fields: r.fields,
            source: r.source,
            rule_id: r.rule_id,
            alarm_id: r.alarm_id,
            merged_count: r.merged_count,
            created_at: r.created_at,
            last_at: r.last_at,
            closed_at: r.closed_at,
        }
    }
}

fn event_scope(e: &EventRow) -> Scope {
    Scope {
        org: e.org.clone(),
        region: e.region.clone(),
    }
}

/// An event as the policy sees it: with its type, which apps are granted events by.
fn event_resource(e: &EventRow) -> serde_json::Value {
    let mut r = crate::authz::resource("event", &e.id.to_string(), Some(&event_scope(e)));
    r["eventType"] = e.type_code.clone().into();
    r
}

/// Which events to search or count; every parameter narrows the result.
#[derive(Deserialize, IntoParams, Default)]
#[serde(rename_all = "camelCase")]
pub struct EventQuery {
    /// The event number, e.g. `E20261126-000042`.
    pub number: Option<String>,
    /// A case-insensitive part of the title.
    pub title: Option<String>,
    /// The event type code.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub type_code: Option<String>,
    /// 1 (critical) to 4 (general).
    pub level: Option<i64>,
    /// Events in this region or below it.
    pub region: Option<String>,
    /// new, processing, closed or isolated.
    pub state: Option<String>,
    /// Created at or after (Unix ms).
    pub from: Option<i64>,
    /// Created before (Unix ms).
    pub to: Option<i64>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

impl EventQuery {
    fn filter<'a>(&'a self, within: Option<&'a Scope>) -> ApiResult<EventFilter<'a>> {
        if let Some(level) = self.level
            && !(1..=4).contains(&level)
        {
            return Err(ApiError::bad_request(
                "level must be 1 (critical), 2 (major), 3 (serious) or 4 (general)",
            ));
        }
        if let Some(s) = &self.state
            && !["new", "processing", "closed", "isolated"].contains(&s.as_str())
        {
            return Err(ApiError::bad_request(
                "state must be new, processing, closed or isolated",
            ));
        }
        if let Some(r) = &self.region {
            parse_region(r).map_err(|e| ApiError::bad_request(format!("region: {e}")))?;
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from >= to
        {
            return Err(ApiError::bad_request(
                "from must be before to (both Unix ms; to is exclusive)",
            ));
        }
        Ok(EventFilter {
            number: self.number.as_deref(),
            title_contains: self.title.as_deref(),
            type_code: self.type_code.as_deref(),
            level: self.level,
            region_prefix: self.region.as_deref(),
            within,
            state: self.state.as_deref(),
            from: self.from,
            to: self.to,
            limit: 0,
            offset: 0,
        })
    }
}

/// Search events, the most recently created first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", security(("bearer" = [])),
    params(EventQuery), responses((status = 200, body = Paged<Event>)))]
pub async fn list_events(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<EventQuery>,
) -> ApiResult<Json<Paged<Event>>> {
    let ops = operations(&state)?;
    let (page, number, size) = PageQuery {
        page: q.page,
        page_size: q.page_size,
    }
    .page()?;
    let within = crate::authz::list_scope(&state, &user, "event")?;
    let mut filter = q.filter(within.as_ref())?;
    filter.limit = page.limit;
    filter.offset = page.offset;
    let (rows, total) = ops.store.list_events(&filter).await.map_err(stored)?;
    // The scope narrows the query; each row is still the policy's to show.
    let items = rows
        .into_iter()
        .filter(|r| crate::authz::allows(&state, &user, "event.read", event_resource(r)))
        .map(Event::from)
        .collect();
    Ok(Json(Paged {
        items,
        total,
        page: number,
        page_size: size,
    }))
}

/// An event as an operator reports it.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReportEvent {
    /// The event type code (it must exist: PUT /api/v1/event-types/{code}).
    #[serde(rename = "type")]
    pub type_code: String,
    pub title: String,
    /// 1 (critical) to 4 (general); the type's default level when absent.
    pub level: Option<u64>,
    pub location: Option<Location>,
    /// Where it happened; the reporter's region when absent, and never outside it.
    pub region: Option<String>,
    /// Values of the type's fields.
    #[serde(default)]
    pub fields: Map<String, Value>,
}

/// What happened to a reported event: `created` (with the workflow started, if one applies),
/// `merged` into an open event nearby, `autoClosed` or `isolated`.
#[derive(Serialize, ToSchema)]
pub struct ReportOutcome {
    /// created, merged, autoClosed or isolated.
    pub outcome: String,
    /// The event's id.
    pub event: i64,
    pub number: String,
    /// The disposal workflow started (created events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
}

impl From<Submitted> for ReportOutcome {
    fn from(s: Submitted) -> Self {
        let (outcome, event, number, workflow) = match s {
            Submitted::Created {
                event,
                number,
                workflow,
            } => ("created", event, number, workflow),
            Submitted::Merged { event, number } => ("merged", event, number, None),
            Submitted::AutoClosed { event, number } => ("autoClosed", event, number, None),
            Submitted::Isolated { event, number } => ("isolated", event, number, None),
        };
        ReportOutcome {
            outcome: outcome.into(),
            event,
            number,
            workflow,
        }
    }
}

/// Report an event. It is classified against its type — merged into an open event of the
/// same type nearby, closed at once, kept out of dispatch, or dispatched to its workflow —
/// and the answer says which.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", security(("bearer" = [])),
    request_body = ReportEvent,
    responses((status = 201, body = ReportOutcome), (status = 403, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn report_event(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<ReportEvent>,
) -> ApiResult<(StatusCode, Json<ReportOutcome>)> {
    let ops = operations(&state)?;
    let mine = &user.user.scope;
    let region = match req.region {
        Some(r) => parse_region(&r).map_err(|e| ApiError::unprocessable(format!("region: {e}")))?,
        None => mine.region.clone(),
    };
    if !region_covers(&mine.region, &region) {
        return Err(ApiError::forbidden(format!(
            "region: {region} is outside your region {}; report events in your region or \
             below it",
            mine.region
        )));
    }
    let scope = Scope {
        org: mine.org.clone(),
        region: region.clone(),
    };
    crate::authz::check(
        &state,
        &user,
        "event.write",
        crate::authz::resource("event", "", Some(&scope)),
    )?;
    let level = req
        .level
        .map(|n| {
            Level::from_number(n).ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "level: {n} does not exist; use 1 (critical), 2 (major), 3 (serious) or 4 \
                     (general), or leave it out for the type's default"
                ))
            })
        })
        .transpose()?;
    let draft = EventDraft {
        type_code: req.type_code,
        title: req.title,
        level,
        location: req.location.map(|l| GeoPoint {
            lat: l.lat,
            lon: l.lon,
        }),
        region,
        fields: req.fields,
        source: json!({"kind": "operator", "username": user.user.username}),
        at_ms: now_ms(),
    };
    let submitted = ops
        .center
        .submit(Submission {
            draft,
            org: scope.org.clone(),
            rule_id: None,
            alarm_id: None,
            actor: user.user.username.clone(),
        })
        .await
        .map_err(center_error)?;
    tracing::info!(event = submitted.event_id(), by = %user.user.username, "event reported");
    Ok((StatusCode::CREATED, Json(submitted.into())))
}

/// One entry of an event's timeline.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub seq: i64,
    pub at: i64,
    /// The user who acted; none for the system (a rule, a deadline).
    pub actor: Option<String>,
    /// created, merged, workflow_started, processing, task_created, task_closed, notified,
    /// escalated or closed.
    pub action: String,
    pub detail: Value,
}

impl From<TimelineRow> for TimelineEntry {
    fn from(r: TimelineRow) -> Self {
        TimelineEntry {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            detail: r.detail,
        }
    }
}

/// The workflow disposing of an event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventWorkflow {
    pub id: String,
    pub version: i64,
    /// running or completed.
    pub state: String,
    /// Its trail: steps started, tasks assigned, approved, rejected, transferred, escalated.
    pub trail: Value,
    /// When the next deadline falls (Unix ms), if a task has one.
    pub next_deadline: Option<i64>,
}

/// An event with everything that happened to it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventDetail {
    #[serde(flatten)]
    pub event: Event,
    pub timeline: Vec<TimelineEntry>,
    pub tasks: Vec<Task>,
    pub workflow: Option<EventWorkflow>,
}

/// The event `key` names: its id, or its number (`E20261126-000042`).
async fn event_row(ops: &Operations, key: &str) -> ApiResult<EventRow> {
    let row = match key.parse::<i64>() {
        Ok(id) => ops.store.get_event(id).await?,
        Err(_) => ops.store.get_event_by_number(key).await?,
    };
    row.ok_or_else(|| ApiError::not_found(format!("event {key} not found")))
}

/// An event (by id or number), its timeline, its tasks and its workflow's trail.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "the event's id or number")),
    responses((status = 200, body = EventDetail), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem)))]
pub async fn get_event(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<EventDetail>> {
    let ops = operations(&state)?;
    let row = event_row(ops, &id).await?;
    crate::authz::check(&state, &user, "event.read", event_resource(&row))?;
    let timeline = ops.store.event_timeline(row.id).await?;
    let tasks = ops.store.tasks_of_event(row.id).await?;
    let workflow = ops
        .store
        .workflow_instance(row.id)
        .await?
        .map(|w| EventWorkflow {
            trail: w
                .instance
                .get("trail")
                .cloned()
                .unwrap_or(Value::Array(Vec::new())),
            id: w.definition_id,
            version: w.definition_version,
            state: w.state,
            next_deadline: w.next_deadline,
        });
    Ok(Json(EventDetail {
        event: row.into(),
        timeline: timeline.into_iter().map(TimelineEntry::from).collect(),
        tasks: tasks.into_iter().map(Task::from).collect(),
        workflow,
    }))
}

/// How events are grouped and the filters that apply.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct StatsQuery {
    /// type, level, region, state or day (UTC, `yyyy-mm-dd`); type when absent.
    pub group_by: Option<String>,
    pub number: Option<String>,
    pub title: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub type_code: Option<String>,
    pub level: Option<i64>,
    pub region: Option<String>,
    pub state: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// One group of events.
#[derive(Serialize, ToSchema)]
pub struct Group {
    pub key: String,
    pub count: i64,
}

/// How long the closed events took, creation to closing (ms).
#[derive(Serialize, ToSchema)]
pub struct TimeToClose {
    /// How many closed events the figures are over.
    pub count: usize,
    pub p50: Option<i64>,
    pub p90: Option<i64>,
    pub p99: Option<i64>,
}

impl TimeToClose {
    /// Nearest-rank percentiles of durations sorted shortest first.
    fn of(sorted: &[i64]) -> TimeToClose {
        let rank = |p: usize| -> Option<i64> {
            if sorted.is_empty() {
                return None;
            }
            let r = (p * sorted.len()).div_ceil(100).max(1);
            sorted.get(r - 1).copied()
        };
        TimeToClose {
            count: sorted.len(),
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
        }
    }
}

/// Event statistics.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventStats {
    pub groups: Vec<Group>,
    pub time_to_close: TimeToClose,
}

/// Count the events you may see, grouped, and how long the closed ones took to close.
#[utoipa::path(get, path = "/api/v1/events/stats", tag = "events", security(("bearer" = [])),
    params(StatsQuery), responses((status = 200, body = EventStats)))]
pub async fn event_stats(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<StatsQuery>,
) -> ApiResult<Json<EventStats>> {
    let ops = operations(&state)?;
    // Counts cannot be checked row by row: the caller must be one who reads events at all,
    // and the query is confined to the caller's scope.
    crate::authz::check(
        &state,
        &user,
        "event.read",
        crate::authz::resource("event", "*", None),
    )?;
    let group = match q.group_by.as_deref().unwrap_or("type") {
        "type" => EventGroup::Type,
        "level" => EventGroup::Level,
        "region" => EventGroup::Region,
        "state" => EventGroup::State,
        "day" => EventGroup::Day,
        other => {
            return Err(ApiError::bad_request(format!(
                "groupBy `{other}`: use type, level, region, state or day"
            )));
        }
    };
    let within = crate::authz::list_scope(&state, &user, "event")?;
    let query = EventQuery {
        number: q.number,
        title: q.title,
        type_code: q.type_code,
        level: q.level,
        region: q.region,
        state: q.state,
        from: q.from,
        to: q.to,
        ..EventQuery::default()
    };
    let filter = query.filter(within.as_ref())?;
    let groups = ops
        .store
        .event_counts(&filter, group)
        .await
        .map_err(stored)?;
    let took = ops.store.time_to_close_ms(&filter).await.map_err(stored)?;
    Ok(Json(EventStats {
        groups: groups
            .into_iter()
            .map(|(key, count)| Group { key, count })
            .collect(),
        time_to_close: TimeToClose::of(&took),
    }))
}

/// A rule that raises an event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogueEntry {
    pub rule_id: String,
    pub rule_name: String,
    pub enabled: bool,
    /// The event type it raises.
    pub event_type: String,
    /// The type's name, when the type exists.
    pub event_type_name: Option<String>,
    /// The level the rule states, else the type's default level; none when neither is known.
    pub level: Option<u64>,
    /// The event title template.
    pub title: String,
    /// What makes the rule fire, in words.
    pub trigger: String,
}

/// Which rule raises which event.
#[derive(Serialize, ToSchema)]
pub struct Catalogue {
    pub items: Vec<CatalogueEntry>,
}

/// A rule's trigger in words.
fn trigger_in_words(t: &Trigger) -> String {
    match t {
        Trigger::Sql { sql } => sql.clone(),
        Trigger::Scene {
            product_key,
            condition,
            ..
        } => {
            let op = serde_json::to_value(condition.op)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{:?}", condition.op));
            format!(
                "property {} of product {product_key} {op} {} for {} s",
                condition.property, condition.threshold, condition.hold_for_secs
            )
        }
        Trigger::Offline {
            product_key,
            offline_for_secs,
        } => format!("a device of product {product_key} offline for {offline_for_secs} s"),
        Trigger::Schedule { cron, time_zone } => format!("cron {cron} in {time_zone}"),
        Trigger::Platform { events, .. } => format!("platform events {}", events.join(", ")),
        Trigger::Plugin { plugin, .. } => format!("rule plugin {plugin}"),
    }
}

/// For every stored rule with an `event` action you may read: the event type it raises, at
/// which level, and its trigger in words.
#[utoipa::path(get, path = "/api/v1/event-catalogue", tag = "events", security(("bearer" = [])),
    responses((status = 200, body = Catalogue)))]
pub async fn event_catalogue(
    State(state): State<ApiState>,
    user: Authenticated,
) -> ApiResult<Json<Catalogue>> {
    let ops = operations(&state)?;
    let types: std::collections::HashMap<String, Value> =
        ops.store.list_event_types().await?.into_iter().collect();
    let mut items = Vec::new();
    for rule in ops.store.list_rules().await? {
        let scope = Scope {
            org: rule.org.clone(),
            region: rule.region.clone(),
        };
        if !crate::authz::allows(
            &state,
            &user,
            "rule.read",
            crate::authz::resource("rule", &rule.id, Some(&scope)),
        ) {
            continue;
        }
        let def: RuleDefinition = match serde_json::from_value(rule.definition.clone()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(rule = %rule.id, error = %e, "stored rule cannot be read; left out of the event catalogue");
                continue;
            }
        };
        for action in &def.actions {
            let ActionSpec::Event {
                event_type,
                title,
                level,
                ..
            } = action
            else {
                continue;
            };
            let ty = types.get(event_type);
            items.push(CatalogueEntry {
                rule_id: rule.id.clone(),
                rule_name: rule.name.clone(),
                enabled: rule.enabled,
                event_type: event_type.clone(),
                event_type_name: ty.and_then(|t| t["name"].as_str()).map(str::to_string),
                level: level
                    .map(u64::from)
                    .or_else(|| ty.and_then(|t| t["defaultLevel"].as_u64())),
                title: title.clone(),
                trigger: trigger_in_words(&def.trigger),
            });
        }
    }
    Ok(Json(Catalogue { items }))
}

// --- routing and documentation -------------------------------------------------------------

/// The event center's routes (with tasks, messages and notification settings).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/event-types", get(list_event_types))
        .route(
            "/api/v1/event-types/{code}",
            get(get_event_type)
                .put(put_event_type)
                .delete(delete_event_type),
        )
        .route(
            "/api/v1/workflows",
            get(list_workflows).post(create_workflow),
        )
        .route("/api/v1/workflows/{id}", get(get_workflow))
        .route("/api/v1/workflows/{id}/enable", post(enable_workflow))
        .route("/api/v1/workflows/{id}/disable", post(disable_workflow))
        .route("/api/v1/events", get(list_events).post(report_event))
        .route("/api/v1/events/stats", get(event_stats))
        .route("/api/v1/events/{id}", get(get_event))
        .route("/api/v1/event-catalogue", get(event_catalogue))
        .merge(crate::tasks::routes())
        .merge(crate::messages::routes())
        .merge(crate::notifications::routes())
}

#[derive(OpenApi)]
#[openapi(
    paths(
        list_event_types, get_event_type, put_event_type, delete_event_type,
        list_workflows, create_workflow, get_workflow, enable_workflow, disable_workflow,
        list_events, report_event, get_event, event_stats, event_catalogue,
    ),
    tags(
        (name = "events", description = "Event types, disposal workflows, events, statistics and the catalogue of rules that raise events"),
        (name = "tasks", description = "Your disposal tasks: list them and approve, reject, transfer or report progress"),
        (name = "messages", description = "Your message center"),
        (name = "notifications", description = "Notification channels, templates, deliveries and your preferences"),
    )
)]
struct EventCenterDoc;

/// The OpenAPI document of the event center's routes (events, tasks, messages, notifications).
pub struct EventsDoc;

impl OpenApi for EventsDoc {
    fn openapi() -> utoipa::openapi::OpenApi {
        let mut doc = EventCenterDoc::openapi();
        doc.merge(crate::tasks::TasksDoc::openapi());
        doc.merge(crate::messages::MessagesDoc::openapi());
        doc.merge(crate::notifications::NotificationsDoc::openapi());
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let none = TimeToClose::of(&[]);
        assert_eq!((none.count, none.p50, none.p99), (0, None, None));
        let one = TimeToClose::of(&[7]);
        assert_eq!((one.p50, one.p90, one.p99), (Some(7), Some(7), Some(7)));
        let hundred: Vec<i64> = (1..=100).collect();
        let t = TimeToClose::of(&hundred);
        assert_eq!((t.p50, t.p90, t.p99), (Some(50), Some(90), Some(99)));
        let ten: Vec<i64> = (1..=10).map(|i| i * 1000).collect();
        let t = TimeToClose::of(&ten);
        assert_eq!(
            (t.p50, t.p90, t.p99),
            (Some(5000), Some(9000), Some(10_000))
        );
    }

    #[test]
    fn yaml_by_content_type() {
        let mut h = HeaderMap::new();
        assert!(!is_yaml(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/yaml; charset=utf-8".parse().unwrap(),
        );
        assert!(is_yaml(&h));
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(!is_yaml(&h));
    }

    #[test]
    fn triggers_in_words() {
        let scene: Trigger = serde_json::from_value(json!({
            "kind": "scene", "productKey": "pk1",
            "condition": {"property": "temperature", "op": ">", "threshold": 30.0, "holdForSecs": 60}
        }))
        .unwrap();
        assert_eq!(
            trigger_in_words(&scene),
            "property temperature of product pk1 > 30 for 60 s"
        );
        let cron: Trigger =
            serde_json::from_value(json!({"kind": "schedule", "cron": "0 8 * * *"})).unwrap();
        assert_eq!(trigger_in_words(&cron), "cron 0 8 * * * in Asia/Shanghai");
    }

    #[test]
    fn codes() {
        assert!(is_code("water.main_burst"));
        assert!(!is_code(""));
        assert!(!is_code("Water"));
        assert!(!is_code(&"a".repeat(65)));
    }
}
