//! Rules of the event operations center: create, edit (every edit a new version), enable,
//! disable, roll back and delete them; test a rule against a message without running its
//! actions (dry run); read its counters; and retry the rule actions that ran out of attempts.
//!
//! A rule is compiled before it is stored, so a rule that does not compile is refused with the
//! part to fix (`trigger.sql`, `actions[1].title`, …) and never reaches the engine. Every
//! stored change makes the running engine re-read the rules.
//!
//! Alarms, which rules raise, are in [`crate::alarms`]; their routes and paths are served from
//! here.

use std::collections::HashMap;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lotus_model::scope::Scope;
use lotus_operations::message::RuleMessage;
use lotus_operations::rule::{CompiledRule, CompiledTrigger, RuleError};
use lotus_operations::{Operations, check_rule_id, compile};
use lotus_rules::RuleInput;
use lotus_storage::{
    NewRule, OutboxRow, RuleRow, RuleStatsRow, RuleUpdate, RuleVersionRow, StorageError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Path, Query};
use crate::products::{PageQuery, Paged};

/// Longest rule name.
const MAX_NAME: usize = 128;
/// Longest rule description.
const MAX_DESCRIPTION: usize = 2000;
/// Dead letters looked at per query while finding one to retry.
const DEAD_LETTER_SCAN: i64 = 500;

/// The running operations center, or 503 on a node that runs none.
pub(crate) fn operations(state: &ApiState) -> ApiResult<&Operations> {
    state.operations.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs no operations center",
        )
    })
}

/// What a rule route fails with: an API error, or a rule that does not compile.
#[derive(Debug)]
pub enum RuleFailure {
    Api(ApiError),
    /// 422 problem with a `field` member naming the part of the definition to fix.
    Invalid(RuleError),
}

impl From<ApiError> for RuleFailure {
    fn from(e: ApiError) -> Self {
        RuleFailure::Api(e)
    }
}

impl From<StorageError> for RuleFailure {
    fn from(e: StorageError) -> Self {
        RuleFailure::Api(e.into())
    }
}

impl IntoResponse for RuleFailure {
    fn into_response(self) -> Response {
        match self {
            RuleFailure::Api(e) => e.into_response(),
            RuleFailure::Invalid(e) => {
                let status = StatusCode::UNPROCESSABLE_ENTITY;
                let body = json!({
                    "type": "about:blank",
                    "title": status.canonical_reason().unwrap_or("Error"),
                    "status": status.as_u16(),
                    "detail": format!(
                        "the rule does not compile, nothing was stored: {}: {}",
                        e.field, e.message
                    ),
                    "field": e.field,
                });
                (
                    status,
                    [(header::CONTENT_TYPE, "application/problem+json")],
                    body.to_string(),
                )
                    .into_response()
            }
        }
    }
}

type RuleResult<T> = Result<T, RuleFailure>;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRule {
    /// 1–64 lowercase letters, digits, `-` or `_`; it appears in URLs.
    #[schema(example = "low-pressure")]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Whether the rule runs once stored; true when absent.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// `{trigger: {kind: sql|scene|offline|schedule|platform|plugin, …}, actions: [{kind, …}]}`.
    pub definition: Value,
    /// The region the rule belongs to, within yours; yours when absent.
    #[schema(example = "/hz/xihu")]
    pub region: Option<String>,
}

fn enabled_by_default() -> bool {
    true
}

/// A new version of a rule: name, description and definition replace the current ones.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRule {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub definition: Value,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRule {
    /// The version whose definition becomes current again (as a new version).
    pub version: i64,
}

/// A device message as a rule sees it (see the rule engine's message shapes).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DryRunMessage {
    /// The Alink topic; the device's property post topic when absent.
    #[schema(example = "/sys/a1B2c3D4e5F/pump-7/thing/event/property/post")]
    pub topic: Option<String>,
    pub product_key: String,
    pub device_name: String,
    /// e.g. `{"items": {"pressure": {"value": 0.1}}, "params": {"pressure": 0.1}}`.
    #[serde(default)]
    pub payload: Value,
    /// Message time (Unix ms); now when absent.
    pub at: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DryRunRequest {
    pub message: DryRunMessage,
}

/// A definition to try before saving it.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DryRunDefinition {
    pub definition: Value,
    pub message: DryRunMessage,
    /// The name templates see as `rule.name`.
    #[serde(default)]
    pub name: String,
}

/// A rule's counters since it was created (written by the engine once a second).
#[derive(Serialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuleStats {
    pub matched: i64,
    pub actions_ok: i64,
    pub actions_failed: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub last_matched_at: Option<i64>,
}

impl From<RuleStatsRow> for RuleStats {
    fn from(s: RuleStatsRow) -> Self {
        RuleStats {
            matched: s.matched,
            actions_ok: s.actions_ok,
            actions_failed: s.actions_failed,
            last_error: s.last_error,
            last_error_at: s.last_error_at,
            last_matched_at: s.last_matched_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    /// 1 at creation, bumped by every edit and rollback.
    pub version: i64,
    pub definition: Value,
    pub org: String,
    pub region: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub stats: RuleStats,
}

impl Rule {
    fn new(r: RuleRow, stats: RuleStats) -> Rule {
        Rule {
            id: r.id,
            name: r.name,
            description: r.description,
            enabled: r.enabled,
            version: r.version,
            definition: r.definition,
            org: r.org,
            region: r.region,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            stats,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleVersion {
    pub version: i64,
    pub definition: Value,
    pub created_by: String,
    pub created_at: i64,
}

impl From<RuleVersionRow> for RuleVersion {
    fn from(v: RuleVersionRow) -> Self {
        RuleVersion {
            version: v.version,
            definition: v.definition,
            created_by: v.created_by,
            created_at: v.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RuleVersionList {
    /// Oldest first.
    pub items: Vec<RuleVersion>,
}

/// One action of a dry run: what it would send, not sent.
#[derive(Serialize, ToSchema, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DryRunAction {
    /// `alarm`, `clearAlarm`, `event`, `webhook`, `republish`, `setProperty`, `invokeService`
    /// or `notify`.
    pub kind: String,
    /// Each template of the action rendered with the match (`message`, `title`, `topic`, …).
    pub rendered: Map<String, Value>,
    /// Templates that failed to render, with why.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub errors: Map<String, Value>,
}

/// What a rule would do with a message.
#[derive(Serialize, ToSchema, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    pub matched: bool,
    /// What the trigger selected (`data` in templates); absent when nothing matched.
    pub output: Option<Value>,
    /// The whole template context: `rule`, `device`, `data`, `at`.
    pub context: Option<Value>,
    /// The actions that would run, in order, with their texts rendered; none ran.
    pub actions: Vec<DryRunAction>,
    /// Why the rule did not match, or what the dry run could not reproduce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A rule action that ran out of attempts.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleDeadLetter {
    pub id: i64,
    pub rule_id: String,
    /// The action as the rule defines it.
    pub action: Value,
    /// What the action carried (the match, rendered fields).
    pub payload: Value,
    /// `dead`, or `pending` once retried.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<OutboxRow> for RuleDeadLetter {
    fn from(o: OutboxRow) -> Self {
        RuleDeadLetter {
            id: o.id,
            rule_id: o.rule_id,
            action: o.action,
            payload: o.payload,
            state: o.state,
            attempts: o.attempts,
            next_attempt_at: o.next_attempt_at,
            last_error: o.last_error,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// A page of dead letters. Storage does not count them, so instead of a total the page says
/// whether another one follows.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleDeadLetterPage {
    /// The most recently failed first.
    pub items: Vec<RuleDeadLetter>,
    pub page: i64,
    pub page_size: i64,
    pub has_more: bool,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterQuery {
    /// Only this rule's dead actions.
    pub rule_id: Option<String>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

fn scope_of(row: &RuleRow) -> Scope {
    Scope {
        org: row.org.clone(),
        region: row.region.clone(),
    }
}

/// Loads a rule and checks `rule.{verb}` on it; 404 when it does not exist.
async fn rule_for(
    state: &ApiState,
    user: &Authenticated,
    verb: &str,
    id: &str,
) -> ApiResult<RuleRow> {
    let row = state
        .store
        .get_rule(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("rule '{id}' not found")))?;
    crate::authz::check(
        state,
        user,
        &format!("rule.{verb}"),
        crate::authz::resource("rule", id, Some(&scope_of(&row))),
    )?;
    Ok(row)
}

/// Makes the engine run what was just stored.
async fn reload(ops: &Operations, id: &str) -> ApiResult<()> {
    match ops.reload_rules().await {
        Ok(running) => {
            tracing::debug!(rule = %id, running, "rules reloaded");
            Ok(())
        }
        Err(e) => {
            tracing::error!(rule = %id, error = %e, "rules not reloaded after a change");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "rule '{id}' was saved, but the rule engine could not re-read the rules \
                     (storage is unavailable); retry the request to make the change take effect"
                ),
            ))
        }
    }
}

fn check_name(name: &str, description: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME {
        return Err(ApiError::unprocessable(format!(
            "name: 1 to {MAX_NAME} characters"
        )));
    }
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::unprocessable(format!(
            "description: at most {MAX_DESCRIPTION} characters"
        )));
    }
    Ok(())
}

fn compile_row(
    id: &str,
    name: &str,
    version: i64,
    scope: &Scope,
    definition: &Value,
) -> RuleResult<CompiledRule> {
    compile(id, name, version, &scope.org, &scope.region, definition).map_err(RuleFailure::Invalid)
}

/// Create a rule. It is compiled first: a rule that does not compile is refused with 422 and
/// the part to fix in `field` (e.g. `trigger.sql`, with line and column in the detail).
#[utoipa::path(post, path = "/api/v1/rules", tag = "rules", security(("bearer" = [])),
    request_body = CreateRule,
    responses((status = 201, body = Rule), (status = 403, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<CreateRule>,
) -> RuleResult<(StatusCode, Json<Rule>)> {
    let ops = operations(&state)?;
    check_rule_id(&req.id).map_err(|m| ApiError::unprocessable(format!("id: {m}")))?;
    let scope = crate::products::requested_scope(&user, None, req.region.as_deref())?;
    crate::authz::check(
        &state,
        &user,
        "rule.write",
        crate::authz::resource("rule", &req.id, Some(&scope)),
    )?;
    check_name(&req.name, &req.description)?;
    compile_row(&req.id, &req.name, 1, &scope, &req.definition)?;
    let row = state
        .store
        .create_rule(&NewRule {
            id: &req.id,
            name: req.name.trim(),
            description: &req.description,
            enabled: req.enabled,
            definition: &req.definition,
            org: &scope.org,
            region: &scope.region,
            created_by: &user.user.username,
        })
        .await?;
    reload(ops, &row.id).await?;
    tracing::info!(rule = %row.id, region = %row.region, by = %user.user.username, "rule created");
    Ok((
        StatusCode::CREATED,
        Json(Rule::new(row, RuleStats::default())),
    ))
}

/// The rules you may see, by id, each with its counters.
#[utoipa::path(get, path = "/api/v1/rules", tag = "rules", security(("bearer" = [])),
    params(PageQuery), responses((status = 200, body = Paged<Rule>)))]
pub async fn list(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paged<Rule>>> {
    operations(&state)?;
    crate::authz::check(
        &state,
        &user,
        "rule.read",
        crate::authz::resource("rule", "", None),
    )?;
    let (page, number, size) = q.page()?;
    let within = crate::authz::list_scope(&state, &user, "rule")?;
    let orgs = match &within {
        Some(s) => state.store.org_subtree(&s.org).await?,
        None => Vec::new(),
    };
    // Rules are few (hundreds at most), so scope and page are applied here rather than in SQL.
    let visible: Vec<RuleRow> = state
        .store
        .list_rules()
        .await?
        .into_iter()
        .filter(|r| {
            within.as_ref().is_none_or(|s| {
                (r.org.is_empty() || orgs.contains(&r.org))
                    && lotus_model::scope::region_covers(&s.region, &r.region)
            })
        })
        .filter(|r| {
            crate::authz::allows(
                &state,
                &user,
                "rule.read",
                crate::authz::resource("rule", &r.id, Some(&scope_of(r))),
            )
        })
        .collect();
    let total = visible.len() as i64;
    let mut items = Vec::new();
    for row in visible
        .into_iter()
        .skip(page.offset as usize)
        .take(page.limit as usize)
    {
        let stats = state.store.rule_stats(&row.id).await?;
        items.push(Rule::new(row, stats.into()));
    }
    Ok(Json(Paged {
        items,
        total,
        page: number,
        page_size: size,
    }))
}

/// A rule with its counters.
#[utoipa::path(get, path = "/api/v1/rules/{id}", tag = "rules", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Rule), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem)))]
pub async fn get_rule(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Rule>> {
    operations(&state)?;
    let row = rule_for(&state, &user, "read", &id).await?;
    let stats = state.store.rule_stats(&id).await?;
    Ok(Json(Rule::new(row, stats.into())))
}

/// Replace a rule's name, description and definition: a new version, compiled before it is
/// stored, running as soon as it is.
#[utoipa::path(put, path = "/api/v1/rules/{id}", tag = "rules", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = UpdateRule,
    responses((status = 200, body = Rule), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn update(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
    Json(req): Json<UpdateRule>,
) -> RuleResult<Json<Rule>> {
    let ops = operations(&state)?;
    let row = rule_for(&state, &user, "write", &id).await?;
    check_name(&req.name, &req.description)?;
    compile_row(
        &id,
        &req.name,
        row.version + 1,
        &scope_of(&row),
        &req.definition,
    )?;
    let row = state
        .store
        .update_rule(
            &id,
            &RuleUpdate {
                name: req.name.trim(),
                description: &req.description,
                definition: &req.definition,
                updated_by: &user.user.username,
            },
        )
        .await?;
    reload(ops, &id).await?;
    tracing::info!(rule = %id, version = row.version, by = %user.user.username, "rule updated");
    let stats = state.store.rule_stats(&id).await?;
    Ok(Json(Rule::new(row, stats.into())))
}

/// Delete a rule with its history and counters. Actions it already queued still run.
#[utoipa::path(delete, path = "/api/v1/rules/{id}", tag = "rules", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem)))]
pub async fn delete(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let ops = operations(&state)?;
    rule_for(&state, &user, "delete", &id).await?;
    if !state.store.delete_rule(&id).await? {
        return Err(ApiError::not_found(format!("rule '{id}' not found")));
    }
    reload(ops, &id).await?;
    tracing::info!(rule = %id, by = %user.user.username, "rule deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn set_enabled(
    state: ApiState,
    user: Authenticated,
    id: String,
    enabled: bool,
) -> ApiResult<Json<Rule>> {
    let ops = operations(&state)?;
    rule_for(&state, &user, "write", &id).await?;
    let row = state.store.set_rule_enabled(&id, enabled).await?;
    reload(ops, &id).await?;
    tracing::info!(rule = %id, enabled, by = %user.user.username, "rule switched");
    let stats = state.store.rule_stats(&id).await?;
    Ok(Json(Rule::new(row, stats.into())))
}

/// Start running a rule.
#[utoipa::path(post, path = "/api/v1/rules/{id}/enable", tag = "rules", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Rule), (status = 404, body = crate::problem::Problem)))]
pub async fn enable(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Rule>> {
    set_enabled(state, user, id, true).await
}

/// Stop running a rule (kept, with its history and counters).
#[utoipa::path(post, path = "/api/v1/rules/{id}/disable", tag = "rules", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Rule), (status = 404, body = crate::problem::Problem)))]
pub async fn disable(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Rule>> {
    set_enabled(state, user, id, false).await
}

/// Every stored version of a rule's definition, oldest first.
#[utoipa::path(get, path = "/api/v1/rules/{id}/versions", tag = "rules", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = RuleVersionList), (status = 404, body = crate::problem::Problem)))]
pub async fn versions(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<RuleVersionList>> {
    operations(&state)?;
    rule_for(&state, &user, "read", &id).await?;
    let rows = state.store.rule_versions(&id).await?;
    Ok(Json(RuleVersionList {
        items: rows.into_iter().map(RuleVersion::from).collect(),
    }))
}

/// Make an earlier version's definition current again, as a new version (so the rollback can
/// itself be rolled back). Refused with 422 when that definition no longer compiles.
#[utoipa::path(post, path = "/api/v1/rules/{id}/rollback", tag = "rules", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RollbackRule,
    responses((status = 200, body = Rule), (status = 404, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn rollback(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
    Json(req): Json<RollbackRule>,
) -> RuleResult<Json<Rule>> {
    let ops = operations(&state)?;
    let row = rule_for(&state, &user, "write", &id).await?;
    let old = state
        .store
        .rule_versions(&id)
        .await?
        .into_iter()
        .find(|v| v.version == req.version)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "rule '{id}' has no version {}: GET /api/v1/rules/{id}/versions lists them",
                req.version
            ))
        })?;
    compile_row(
        &id,
        &row.name,
        row.version + 1,
        &scope_of(&row),
        &old.definition,
    )?;
    let row = state
        .store
        .rollback_rule(&id, req.version, &user.user.username)
        .await?;
    reload(ops, &id).await?;
    tracing::info!(rule = %id, to = req.version, version = row.version, by = %user.user.username,
        "rule rolled back");
    let stats = state.store.rule_stats(&id).await?;
    Ok(Json(Rule::new(row, stats.into())))
}

/// A rule's counters: matches, actions that went through and failed, the last error.
#[utoipa::path(get, path = "/api/v1/rules/{id}/stats", tag = "rules", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = RuleStats), (status = 404, body = crate::problem::Problem)))]
pub async fn stats(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<RuleStats>> {
    operations(&state)?;
    rule_for(&state, &user, "read", &id).await?;
    Ok(Json(state.store.rule_stats(&id).await?.into()))
}

fn rule_message(m: DryRunMessage) -> ApiResult<RuleMessage> {
    if m.product_key.is_empty() || m.device_name.is_empty() {
        return Err(ApiError::unprocessable(
            "message.productKey and message.deviceName: name the device the message comes from",
        ));
    }
    let topic = m.topic.unwrap_or_else(|| {
        format!(
            "/sys/{}/{}/thing/event/property/post",
            m.product_key, m.device_name
        )
    });
    Ok(RuleMessage {
        topic,
        product_key: m.product_key,
        device_name: m.device_name,
        payload: m.payload,
        at: m.at.unwrap_or_else(lotus_device::now_ms),
    })
}

/// Test a stored rule (its current version) against a message. The trigger is evaluated and
/// each action's texts are rendered as the engine would, but no action runs.
#[utoipa::path(post, path = "/api/v1/rules/{id}/dry-run", tag = "rules", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = DryRunRequest,
    responses((status = 200, body = DryRun), (status = 404, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn dry_run_rule(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
    Json(req): Json<DryRunRequest>,
) -> RuleResult<Json<DryRun>> {
    operations(&state)?;
    let row = rule_for(&state, &user, "read", &id).await?;
    let rule = compile_row(
        &row.id,
        &row.name,
        row.version,
        &scope_of(&row),
        &row.definition,
    )?;
    let msg = rule_message(req.message)?;
    Ok(Json(dry_run(&rule, &msg, lotus_device::now_ms())))
}

/// Test a definition before saving it: compiled (422 with the part to fix when it does not
/// compile) and evaluated against the message; no action runs and nothing is stored.
#[utoipa::path(post, path = "/api/v1/rules:dry-run", tag = "rules", security(("bearer" = [])),
    request_body = DryRunDefinition,
    responses((status = 200, body = DryRun), (status = 422, body = crate::problem::Problem)))]
pub async fn dry_run_definition(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<DryRunDefinition>,
) -> RuleResult<Json<DryRun>> {
    operations(&state)?;
    let scope = user.user.scope.clone();
    crate::authz::check(
        &state,
        &user,
        "rule.write",
        crate::authz::resource("rule", "", Some(&scope)),
    )?;
    let name = if req.name.is_empty() {
        "dry run"
    } else {
        req.name.as_str()
    };
    let rule = compile_row("dry-run", name, 0, &scope, &req.definition)?;
    let msg = rule_message(req.message)?;
    Ok(Json(dry_run(&rule, &msg, lotus_device::now_ms())))
}

fn not_matched(note: String) -> DryRun {
    DryRun {
        matched: false,
        output: None,
        context: None,
        actions: Vec::new(),
        note: Some(note),
    }
}

/// Evaluates one compiled rule against one message the way the rule engine does, and renders
/// what its actions would send, without running them. A scene condition is taken as having
/// held for its hold time (the note says so): a single message cannot show a duration.
pub fn dry_run(rule: &CompiledRule, msg: &RuleMessage, now: i64) -> DryRun {
    let (data, note) = match &rule.trigger {
        CompiledTrigger::Sql(statement) => {
            if !statement.matches_topic(&msg.topic) {
                return not_matched(format!(
                    "the topic {} does not match the rule's FROM filter '{}'",
                    msg.topic,
                    statement.topic_filter()
                ));
            }
            let input = RuleInput {
                topic: &msg.topic,
                product_key: &msg.product_key,
                device_name: &msg.device_name,
                message_id: None,
                payload: &msg.payload,
                timestamp_ms: msg.at,
                now_ms: now,
            };
            match statement.evaluate(&input) {
                Some(data) => (Value::Object(data), None),
                None => {
                    return not_matched(
                        "the WHERE condition does not hold for this message".to_string(),
                    );
                }
            }
        }
        CompiledTrigger::Scene {
            product_key,
            scope,
            tracker,
        } => {
            if !msg.topic.ends_with("/thing/event/property/post") {
                return not_matched(format!(
                    "a scene condition watches property posts (/sys/{{productKey}}/{{deviceName}}/thing/event/property/post), not {}",
                    msg.topic
                ));
            }
            if *product_key != msg.product_key {
                return not_matched(format!(
                    "the scene watches the devices of product {product_key}, not {}",
                    msg.product_key
                ));
            }
            if let Some(scoped) = scope
                && !scoped.contains(&msg.device_name)
            {
                return not_matched(format!(
                    "device {} is not in the scene's scope ({})",
                    msg.device_name,
                    serde_json::to_string(&scoped.scope).unwrap_or_default()
                ));
            }
            let tracker = tracker.lock();
            let condition = tracker.condition();
            let Some(value) = tracker.extract(&msg.payload) else {
                return not_matched(format!(
                    "the payload has no numeric params.{} (give {{\"params\": {{\"{}\": <number>}}}})",
                    condition.property, condition.property
                ));
            };
            if !condition.holds(value) {
                return not_matched(format!(
                    "{} = {value} does not satisfy {} {} {}",
                    condition.property,
                    condition.property,
                    condition.op.symbol(),
                    condition.threshold
                ));
            }
            let note = (condition.hold_for_secs > 0).then(|| {
                format!(
                    "the condition must hold for {} s before the rule fires; the dry run assumes it did",
                    condition.hold_for_secs
                )
            });
            (
                json!({"since": msg.at, "params": msg.payload["params"].clone()}),
                note,
            )
        }
        CompiledTrigger::Offline {
            product_key,
            tracker,
        } => {
            if !msg.topic.starts_with("/as/mqtt/status/") {
                return not_matched(format!(
                    "an offline rule watches status changes (/as/mqtt/status/{{productKey}}/{{deviceName}}), not {}",
                    msg.topic
                ));
            }
            if *product_key != msg.product_key {
                return not_matched(format!(
                    "the rule watches the devices of product {product_key}, not {}",
                    msg.product_key
                ));
            }
            if msg.payload["status"] != "offline" {
                return not_matched(
                    "the device is not offline (give {\"status\": \"offline\"})".to_string(),
                );
            }
            let secs = tracker.lock().condition().hold_for_secs;
            (
                json!({"since": msg.at, "params": Value::Null}),
                Some(format!(
                    "the device must stay offline for {secs} s before the rule fires; the dry run assumes it did"
                )),
            )
        }
        CompiledTrigger::Platform(filter) => {
            return not_matched(format!(
                "a platform rule fires on platform events ({}), not on device messages",
                filter.kinds.join(", ")
            ));
        }
        CompiledTrigger::Plugin { plugin, .. } => {
            return not_matched(format!(
                "the rule plugin `{plugin}` decides; a dry run does not call plugins"
            ));
        }
        CompiledTrigger::Schedule(schedule) => {
            return not_matched(format!(
                "a schedule rule fires at the times of its cron expression '{}' ({}), not on device messages",
                schedule.expression(),
                schedule.time_zone()
            ));
        }
    };
    let context = lotus_operations::engine::context(
        rule,
        Some((&msg.product_key, &msg.device_name)),
        data.clone(),
        msg.at,
    );
    let actions = rule
        .actions
        .iter()
        .map(|action| {
            let mut rendered = Map::new();
            let mut errors = Map::new();
            for (field, _) in &action.templates {
                match action.render(field, &context) {
                    Ok(text) => {
                        rendered.insert(field.clone(), Value::String(text));
                    }
                    Err(e) => {
                        errors.insert(field.clone(), Value::String(e));
                    }
                }
            }
            DryRunAction {
                kind: action.spec.kind().to_string(),
                rendered,
                errors,
            }
        })
        .collect();
    DryRun {
        matched: true,
        output: Some(data),
        context: Some(context),
        actions,
        note,
    }
}

/// Rule actions that ran out of attempts, the most recently failed first.
#[utoipa::path(get, path = "/api/v1/rule-dead-letters", tag = "rules", security(("bearer" = [])),
    params(DeadLetterQuery), responses((status = 200, body = RuleDeadLetterPage)))]
pub async fn dead_letters(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<DeadLetterQuery>,
) -> ApiResult<Json<RuleDeadLetterPage>> {
    operations(&state)?;
    let (page, number, size) = PageQuery {
        page: q.page,
        page_size: q.page_size,
    }
    .page()?;
    match &q.rule_id {
        // A deleted rule's actions may still be here: they are asked about below.
        Some(id) => {
            if let Some(row) = state.store.get_rule(id).await? {
                crate::authz::check(
                    &state,
                    &user,
                    "rule.read",
                    crate::authz::resource("rule", id, Some(&scope_of(&row))),
                )?;
            }
        }
        None => crate::authz::check(
            &state,
            &user,
            "rule.read",
            crate::authz::resource("rule", "", None),
        )?,
    }
    // One more than the page, to tell whether another page follows.
    let mut rows = state
        .store
        .list_dead_actions(q.rule_id.as_deref(), page.limit + 1, page.offset)
        .await?;
    let has_more = rows.len() as i64 > page.limit;
    rows.truncate(page.limit as usize);
    let mut scopes = RuleScopes::default();
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        if scopes.allows(&state, &user, "read", &row.rule_id).await? {
            items.push(RuleDeadLetter::from(row));
        }
    }
    Ok(Json(RuleDeadLetterPage {
        items,
        page: number,
        page_size: size,
        has_more,
    }))
}

/// The scopes of the rules dead letters belong to, looked up once per rule.
#[derive(Default)]
struct RuleScopes(HashMap<String, Scope>);

impl RuleScopes {
    /// Whether the caller may `rule.{verb}` the rule `id`. A deleted rule's scope is unknown,
    /// so its actions count as the whole city's: only those who reach everywhere see them.
    async fn allows(
        &mut self,
        state: &ApiState,
        user: &Authenticated,
        verb: &str,
        id: &str,
    ) -> ApiResult<bool> {
        if !self.0.contains_key(id) {
            let scope = match state.store.get_rule(id).await? {
                Some(row) => scope_of(&row),
                None => Scope::default(),
            };
            self.0.insert(id.to_string(), scope);
        }
        Ok(crate::authz::allows(
            state,
            user,
            &format!("rule.{verb}"),
            crate::authz::resource("rule", id, self.0.get(id)),
        ))
    }
}

/// Try a dead rule action again: it becomes pending, due now, with a fresh count of attempts.
#[utoipa::path(post, path = "/api/v1/rule-dead-letters/{id}/retry", tag = "rules", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 202, body = RuleDeadLetter), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn retry_dead_letter(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<i64>,
) -> ApiResult<(StatusCode, Json<RuleDeadLetter>)> {
    operations(&state)?;
    // Storage reads outbox rows only as lists; the dead ones are searched for this one.
    let mut offset = 0;
    let found = loop {
        let rows = state
            .store
            .list_dead_actions(None, DEAD_LETTER_SCAN, offset)
            .await?;
        let last_page = (rows.len() as i64) < DEAD_LETTER_SCAN;
        if let Some(row) = rows.into_iter().find(|r| r.id == id) {
            break Some(row);
        }
        if last_page {
            break None;
        }
        offset += DEAD_LETTER_SCAN;
    };
    let Some(mut row) = found else {
        return Err(ApiError::not_found(format!(
            "rule action {id} is not a dead letter: it does not exist, or it is still pending or \
             done (GET /api/v1/rule-dead-letters lists those that can be retried)"
        )));
    };
    if !RuleScopes::default()
        .allows(&state, &user, "write", &row.rule_id)
        .await?
    {
        // Ask again through `check` for the policy's reason.
        let scope = state
            .store
            .get_rule(&row.rule_id)
            .await?
            .map(|r| scope_of(&r))
            .unwrap_or_default();
        crate::authz::check(
            &state,
            &user,
            "rule.write",
            crate::authz::resource("rule", &row.rule_id, Some(&scope)),
        )?;
    }
    let now = lotus_device::now_ms();
    state.store.requeue_action(id, now).await?;
    tracing::info!(action = id, rule = %row.rule_id, by = %user.user.username, "rule action retried");
    row.state = lotus_storage::ACTION_PENDING.to_string();
    row.attempts = 0;
    row.next_attempt_at = now;
    Ok((StatusCode::ACCEPTED, Json(row.into())))
}

#[derive(OpenApi)]
#[openapi(
    paths(
        list, create, get_rule, update, delete, enable, disable, versions, rollback, stats,
        dry_run_rule, dry_run_definition, dead_letters, retry_dead_letter,
        crate::alarms::list, crate::alarms::get_alarm, crate::alarms::acknowledge,
        crate::alarms::clear,
    ),
    tags(
        (name = "rules", description = "Rules: SQL, scene and schedule triggers with alarm, event, webhook, republish, device and notification actions; versions, dry runs, counters and dead letters"),
        (name = "alarms", description = "Device alarms raised by rules: list, acknowledge, clear"),
    )
)]
pub struct RulesDoc;

/// The rule and alarm routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/rules", get(list).post(create))
        .route("/api/v1/rules:dry-run", post(dry_run_definition))
        .route(
            "/api/v1/rules/{id}",
            get(get_rule).put(update).delete(delete),
        )
        .route("/api/v1/rules/{id}/enable", post(enable))
        .route("/api/v1/rules/{id}/disable", post(disable))
        .route("/api/v1/rules/{id}/versions", get(versions))
        .route("/api/v1/rules/{id}/rollback", post(rollback))
        .route("/api/v1/rules/{id}/dry-run", post(dry_run_rule))
        .route("/api/v1/rules/{id}/stats", get(stats))
        .route("/api/v1/rule-dead-letters", get(dead_letters))
        .route(
            "/api/v1/rule-dead-letters/{id}/retry",
            post(retry_dead_letter),
        )
        .merge(crate::alarms::routes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(pk: &str, dn: &str, params: Value) -> RuleMessage {
        let items: Map<String, Value> = params
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), json!({"value": v, "time": 1000})))
            .collect();
        RuleMessage {
            topic: format!("/sys/{pk}/{dn}/thing/event/property/post"),
            product_key: pk.into(),
            device_name: dn.into(),
            payload: json!({"productKey": pk, "deviceName": dn, "time": 1000, "items": items, "params": params}),
            at: 1000,
        }
    }

    fn sql_rule() -> CompiledRule {
        let def = json!({
            "trigger": {"kind": "sql", "sql": "SELECT items.pressure.value AS p FROM '/sys/+/+/thing/event/property/post' WHERE items.pressure.value < 0.2"},
            "actions": [
                {"kind": "alarm", "alarmType": "pressure-low", "level": 2, "message": "pressure {{ data.p }} MPa at {{ device.deviceName }}"},
                {"kind": "event", "eventType": "water.pressure_low", "title": "Low pressure ({{ rule.name }})"}
            ]
        });
        compile("low-pressure", "Low pressure", 3, "", "/hz/xihu", &def).unwrap()
    }

    #[test]
    fn a_matching_message_renders_every_action() {
        let run = dry_run(
            &sql_rule(),
            &message("pk1", "pump-7", json!({"pressure": 0.1})),
            5000,
        );
        assert!(run.matched, "{run:?}");
        assert_eq!(run.output, Some(json!({"p": 0.1})));
        assert_eq!(run.context.as_ref().unwrap()["rule"]["version"], 3);
        assert_eq!(run.actions.len(), 2);
        assert_eq!(run.actions[0].kind, "alarm");
        assert_eq!(
            run.actions[0].rendered["message"],
            "pressure 0.1 MPa at pump-7"
        );
        assert_eq!(run.actions[1].kind, "event");
        assert_eq!(
            run.actions[1].rendered["title"],
            "Low pressure (Low pressure)"
        );
        assert!(run.note.is_none());
    }

    #[test]
    fn a_non_matching_message_says_why() {
        let rule = sql_rule();
        let run = dry_run(
            &rule,
            &message("pk1", "pump-7", json!({"pressure": 0.5})),
            5000,
        );
        assert!(!run.matched);
        assert!(run.actions.is_empty());
        assert!(run.note.unwrap().contains("WHERE"));

        let mut other_topic = message("pk1", "pump-7", json!({"pressure": 0.1}));
        other_topic.topic = "/as/mqtt/status/pk1/pump-7".into();
        let run = dry_run(&rule, &other_topic, 5000);
        assert!(!run.matched);
        assert!(run.note.unwrap().contains("FROM filter"));
    }

    #[test]
    fn scenes_take_the_hold_as_satisfied_and_schedules_never_match() {
        let def = json!({
            "trigger": {"kind": "scene", "productKey": "pk1",
                "condition": {"property": "temperature", "op": ">", "threshold": 30, "holdForSecs": 60}},
            "actions": [{"kind": "alarm", "alarmType": "hot", "message": "{{ data.params.temperature }} °C"}]
        });
        let rule = compile("hot", "Hot", 1, "", "/", &def).unwrap();
        let run = dry_run(&rule, &message("pk1", "d1", json!({"temperature": 31})), 0);
        assert!(run.matched, "{run:?}");
        assert_eq!(run.actions[0].rendered["message"], "31 °C");
        assert!(run.note.unwrap().contains("60 s"));
        let cold = dry_run(&rule, &message("pk1", "d1", json!({"temperature": 20})), 0);
        assert!(!cold.matched);
        let other = dry_run(&rule, &message("pk2", "d1", json!({"temperature": 40})), 0);
        assert!(other.note.unwrap().contains("product pk1"));
        // A dry run leaves the compiled rule's scene state alone: the same message matches again.
        assert!(dry_run(&rule, &message("pk1", "d1", json!({"temperature": 31})), 0).matched);

        let def = json!({"trigger": {"kind": "schedule", "cron": "0 8 * * *"},
            "actions": [{"kind": "clearAlarm", "alarmType": "x"}]});
        let rule = compile("daily", "Daily", 1, "", "/", &def).unwrap();
        let run = dry_run(&rule, &message("pk1", "d1", json!({})), 0);
        assert!(!run.matched);
        assert!(run.note.unwrap().contains("0 8 * * *"));
    }

    #[tokio::test]
    async fn compile_failures_are_problems_naming_the_field() {
        let def = json!({"trigger": {"kind": "sql", "sql": "SELECT * WHERE x > 1"},
            "actions": [{"kind": "clearAlarm", "alarmType": "x"}]});
        let e = compile("r", "r", 1, "", "/", &def).err().unwrap();
        let resp = RuleFailure::Invalid(e).into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
            .await
            .unwrap();
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["field"], "trigger.sql");
        assert_eq!(problem["status"], 422);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("trigger.sql: line 1, column"), "{detail}");
    }
}
