//! Device alarms raised by rules: a device has at most one open alarm of a type (repeated
//! raises count as occurrences). Operators and dispatchers list them within their scope,
//! acknowledge them (seen, being handled) and clear them (over).

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use lotus_model::scope::{Scope, parse_region};
use lotus_storage::{ALARM_ACKNOWLEDGED, ALARM_ACTIVE, ALARM_CLEARED, AlarmFilter, AlarmRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Path, Query};
use crate::products::{PageQuery, Paged};
use crate::rules::operations;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alarm {
    pub id: i64,
    pub product_key: String,
    pub device_name: String,
    pub alarm_type: String,
    /// The rule that raised it, if a rule did.
    pub rule_id: Option<String>,
    /// 1 (most severe) to 4.
    pub level: i64,
    /// `active`, `acknowledged` or `cleared`.
    pub state: String,
    pub message: String,
    pub details: Value,
    pub region: String,
    pub org: String,
    /// How many raises this alarm stands for.
    pub occurrences: i64,
    pub raised_at: i64,
    /// The latest raise.
    pub last_at: i64,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub cleared_at: Option<i64>,
    pub cleared_by: Option<String>,
}

impl From<AlarmRow> for Alarm {
    fn from(a: AlarmRow) -> Self {
        Alarm {
            id: a.id,
            product_key: a.product_key,
            device_name: a.device_name,
            alarm_type: a.alarm_type,
            rule_id: a.rule_id,
            level: a.level,
            state: a.state,
            message: a.message,
            details: a.details,
            region: a.region,
            org: a.org,
            occurrences: a.occurrences,
            raised_at: a.raised_at,
            last_at: a.last_at,
            acknowledged_at: a.acknowledged_at,
            acknowledged_by: a.acknowledged_by,
            cleared_at: a.cleared_at,
            cleared_by: a.cleared_by,
        }
    }
}

/// Which alarms to list; every parameter narrows the result.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct AlarmQuery {
    /// `active`, `acknowledged` or `cleared`.
    pub state: Option<String>,
    pub product_key: Option<String>,
    pub device_name: Option<String>,
    pub alarm_type: Option<String>,
    /// Only alarms in this region or below it.
    pub region: Option<String>,
    /// Raised at or after (Unix ms).
    pub from: Option<i64>,
    /// Raised before (Unix ms).
    pub to: Option<i64>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

fn scope_of(a: &AlarmRow) -> Scope {
    Scope {
        org: a.org.clone(),
        region: a.region.clone(),
    }
}

fn resource(a: &AlarmRow) -> Value {
    crate::authz::resource("alarm", &a.id.to_string(), Some(&scope_of(a)))
}

/// Loads an alarm and checks `alarm.{verb}` on its organisation and region; 404 when unknown.
async fn alarm_for(
    state: &ApiState,
    user: &Authenticated,
    verb: &str,
    id: i64,
) -> ApiResult<AlarmRow> {
    let row = state
        .store
        .get_alarm(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("alarm {id} not found")))?;
    crate::authz::check(state, user, &format!("alarm.{verb}"), resource(&row))?;
    Ok(row)
}

/// Alarms you may see, the most recently raised first.
#[utoipa::path(get, path = "/api/v1/alarms", tag = "alarms", security(("bearer" = [])),
    params(AlarmQuery), responses((status = 200, body = Paged<Alarm>),
        (status = 400, body = crate::problem::Problem)))]
pub async fn list(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<AlarmQuery>,
) -> ApiResult<Json<Paged<Alarm>>> {
    operations(&state)?;
    crate::authz::check(
        &state,
        &user,
        "alarm.read",
        crate::authz::resource("alarm", "", None),
    )?;
    let (page, number, size) = PageQuery {
        page: q.page,
        page_size: q.page_size,
    }
    .page()?;
    if let Some(s) = q.state.as_deref()
        && ![ALARM_ACTIVE, ALARM_ACKNOWLEDGED, ALARM_CLEARED].contains(&s)
    {
        return Err(ApiError::bad_request(format!(
            "state '{s}': use active, acknowledged or cleared"
        )));
    }
    let region = q
        .region
        .as_deref()
        .map(parse_region)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("region: {e}")))?;
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from >= to
    {
        return Err(ApiError::bad_request(
            "from must be before to (both Unix ms; from is inclusive, to exclusive)",
        ));
    }
    let within = crate::authz::list_scope(&state, &user, "alarm")?;
    let (rows, total) = state
        .store
        .list_alarms(&AlarmFilter {
            state: q.state.as_deref(),
            product_key: q.product_key.as_deref(),
            device_name: q.device_name.as_deref(),
            alarm_type: q.alarm_type.as_deref(),
            region_prefix: region.as_deref(),
            within: within.as_ref(),
            from: q.from,
            to: q.to,
            limit: page.limit,
            offset: page.offset,
        })
        .await?;
    Ok(Json(Paged {
        items: rows
            .into_iter()
            .filter(|a| crate::authz::allows(&state, &user, "alarm.read", resource(a)))
            .map(Alarm::from)
            .collect(),
        total,
        page: number,
        page_size: size,
    }))
}

/// An alarm.
#[utoipa::path(get, path = "/api/v1/alarms/{id}", tag = "alarms", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Alarm), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem)))]
pub async fn get_alarm(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<i64>,
) -> ApiResult<Json<Alarm>> {
    operations(&state)?;
    Ok(Json(alarm_for(&state, &user, "read", id).await?.into()))
}

/// Acknowledge an alarm: seen and being handled. Acknowledging again keeps the first
/// acknowledgement; a cleared alarm cannot be acknowledged (409).
#[utoipa::path(post, path = "/api/v1/alarms/{id}/acknowledge", tag = "alarms", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Alarm), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn acknowledge(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<i64>,
) -> ApiResult<Json<Alarm>> {
    operations(&state)?;
    alarm_for(&state, &user, "write", id).await?;
    let row = state
        .store
        .acknowledge_alarm(id, &user.user.username, lotus_device::now_ms())
        .await?;
    tracing::info!(alarm = id, by = %user.user.username, "alarm acknowledged");
    Ok(Json(row.into()))
}

/// Clear an alarm: it is over. A later raise of the same type opens a new alarm.
#[utoipa::path(post, path = "/api/v1/alarms/{id}/clear", tag = "alarms", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Alarm), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn clear(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<i64>,
) -> ApiResult<Json<Alarm>> {
    operations(&state)?;
    alarm_for(&state, &user, "write", id).await?;
    let row = state
        .store
        .clear_alarm(id, &user.user.username, lotus_device::now_ms())
        .await?;
    tracing::info!(alarm = id, by = %user.user.username, "alarm cleared");
    Ok(Json(row.into()))
}

/// The alarm routes (served through [`crate::rules::routes`]).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/alarms", get(list))
        .route("/api/v1/alarms/{id}", get(get_alarm))
        .route("/api/v1/alarms/{id}/acknowledge", post(acknowledge))
        .route("/api/v1/alarms/{id}/clear", post(clear))
}
