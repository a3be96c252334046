//! The policies themselves, for the city's security team: what is loaded, each package's source
//! and versions, replacing a package (accepted only when it parses and every policy test
//! passes), rolling back, and the decision log.
//!
//! The API never links the policy engine; it reaches it through [`PolicyAdmin`], which the
//! binary implements.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Path, Query};

/// Largest policy source accepted.
const MAX_POLICY_BYTES: usize = 512 * 1024;
const DEFAULT_DECISIONS: usize = 100;
const MAX_DECISIONS: usize = 10_000;

/// Why a change was refused: the parser's message (with line and column) or the failing tests.
#[derive(Debug)]
pub enum PolicyRejection {
    NotFound(String),
    Invalid(String),
}

/// Which decisions to return.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct DecisionQuery {
    /// A decision point (package), e.g. `lotus.api`.
    pub point: Option<String>,
    /// `true` for allows, `false` for denies.
    pub allow: Option<bool>,
    /// A substring of the principal (a user id or name, a device name, a plugin id).
    pub principal: Option<String>,
    /// Unix ms, inclusive.
    pub since: Option<u64>,
    /// Unix ms, inclusive.
    pub until: Option<u64>,
    /// 1 to 10000; 100 when absent.
    pub limit: Option<usize>,
    /// `jsonl` for JSON lines (one decision per line) instead of a JSON document.
    pub format: Option<String>,
}

/// The policy engine as the API drives it; implemented by the binary over `lotus-policy`.
pub trait PolicyAdmin: Send + Sync + 'static {
    /// Every loaded module: `{file, package, version, sha256, test}`.
    fn modules(&self) -> Vec<Value>;
    /// A package's policy and test sources, version and history; `None` when unknown.
    fn package(&self, package: &str) -> Option<Value>;
    /// Replaces a package's policy (`tests: false`) or its tests file; returns the package.
    fn replace(&self, package: &str, tests: bool, source: &str) -> Result<Value, PolicyRejection>;
    /// Puts back the policy (or tests) source that served before the current one.
    fn rollback(&self, package: &str, tests: bool) -> Result<Value, PolicyRejection>;
    /// Kept decisions matching the query, newest first.
    fn decisions(&self, query: &DecisionQuery) -> Vec<Value>;
}

fn admin(state: &ApiState) -> ApiResult<Arc<dyn PolicyAdmin>> {
    state.policy_admin.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node exposes no policy administration",
        )
    })
}

fn rejection(e: PolicyRejection) -> ApiError {
    match e {
        PolicyRejection::NotFound(m) => ApiError::not_found(m),
        PolicyRejection::Invalid(m) => ApiError::unprocessable(format!(
            "the policy was not changed (the previous version keeps serving): {m}"
        )),
    }
}

/// The Rego source of a PUT: the body as text (`Content-Type: text/plain`, e.g. `curl -T
/// file.rego`) or `{"source": "…"}` as JSON.
fn source_of(headers: &HeaderMap, body: &Bytes) -> ApiResult<String> {
    if body.len() > MAX_POLICY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a policy is at most {MAX_POLICY_BYTES} bytes"),
        ));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            source: String,
        }
        let b: Body = serde_json::from_slice(body).map_err(|e| {
            ApiError::unprocessable(format!("a JSON body is {{\"source\": \"…rego…\"}}: {e}"))
        })?;
        return Ok(b.source);
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::unprocessable("the policy must be UTF-8 text"))
}

/// Every loaded policy module.
#[utoipa::path(get, path = "/api/v1/policies", tag = "policies", security(("bearer" = [])),
    responses((status = 200, description = "{items: [{file, package, version, sha256, test}]}")))]
pub async fn list(State(state): State<ApiState>, user: Authenticated) -> ApiResult<Json<Value>> {
    crate::authz::global(&state, &user, "policy", "read", "*")?;
    Ok(Json(serde_json::json!({"items": admin(&state)?.modules()})))
}

/// A package: its policy and tests sources, version and history.
#[utoipa::path(get, path = "/api/v1/policies/{package}", tag = "policies", security(("bearer" = [])),
    params(("package" = String, Path, example = "lotus.api")),
    responses((status = 200, description = "{package, file, source, testFile, tests, version, history}"),
        (status = 404, body = crate::problem::Problem)))]
pub async fn get(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(package): Path<String>,
) -> ApiResult<Json<Value>> {
    crate::authz::global(&state, &user, "policy", "read", &package)?;
    admin(&state)?
        .package(&package)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no policy package '{package}' is loaded")))
}

async fn put_source(
    state: ApiState,
    user: Authenticated,
    package: String,
    tests: bool,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    crate::authz::global(&state, &user, "policy", "write", &package)?;
    let source = source_of(&headers, &body)?;
    let admin = admin(&state)?;
    let who = user.user.username.clone();
    let name = package.clone();
    let out = tokio::task::spawn_blocking(move || admin.replace(&name, tests, &source))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(rejection)?;
    tracing::info!(package = %package, tests, by = %who, version = %out["version"], "policy replaced");
    crate::audit::record(
        &state,
        &who,
        if tests {
            "policy.replace_tests"
        } else {
            "policy.replace"
        },
        &format!("policy:{package}"),
        "ok",
        serde_json::json!({"version": out.get("version")}),
    )
    .await;
    Ok(Json(out))
}

/// Replace a package's policy. It is parsed and every policy test runs against it; only if
/// all pass does it serve (atomically, as a new version, written back to the policy
/// directory). Otherwise 422 with the parser's line and column or the failing tests, and the
/// previous version keeps serving.
#[utoipa::path(put, path = "/api/v1/policies/{package}", tag = "policies", security(("bearer" = [])),
    params(("package" = String, Path, example = "lotus.api")),
    request_body(content_type = "text/plain", description = "the Rego source (or JSON {\"source\": …})"),
    responses((status = 200, description = "the package as GET returns it"),
        (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn put(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(package): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    put_source(state, user, package, false, headers, body).await
}

/// Replace a package's tests (`*_test.rego`), under the same rule: all tests must pass.
#[utoipa::path(put, path = "/api/v1/policies/{package}/tests", tag = "policies", security(("bearer" = [])),
    params(("package" = String, Path)),
    request_body(content_type = "text/plain", description = "the Rego test source"),
    responses((status = 200, description = "the package"), (status = 422, body = crate::problem::Problem)))]
pub async fn put_tests(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(package): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    put_source(state, user, package, true, headers, body).await
}

/// Serve the policy source that served before the current one again (itself a new version,
/// through the same test gate).
#[utoipa::path(post, path = "/api/v1/policies/{package}/rollback", tag = "policies", security(("bearer" = [])),
    params(("package" = String, Path)),
    responses((status = 200, description = "the package"), (status = 404, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn rollback(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(package): Path<String>,
) -> ApiResult<Json<Value>> {
    crate::authz::global(&state, &user, "policy", "write", &package)?;
    let admin = admin(&state)?;
    let name = package.clone();
    let out = tokio::task::spawn_blocking(move || admin.rollback(&name, false))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(rejection)?;
    tracing::info!(package = %package, by = %user.user.username, "policy rolled back");
    crate::audit::record(
        &state,
        &user.user.username,
        "policy.rollback",
        &format!("policy:{package}"),
        "ok",
        serde_json::json!({"version": out.get("version")}),
    )
    .await;
    Ok(Json(out))
}

/// The decision log: every deny and a sample of allows (time, decision point, principal,
/// resource, action, result, reason, policy version, latency), newest first; `format=jsonl`
/// exports JSON lines.
#[utoipa::path(get, path = "/api/v1/decisions", tag = "policies", security(("bearer" = [])),
    params(DecisionQuery),
    responses((status = 200, description = "{items: [decision]} or JSON lines")))]
pub async fn decisions(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(mut q): Query<DecisionQuery>,
) -> ApiResult<Response> {
    crate::authz::global(&state, &user, "decision", "read", "*")?;
    let limit = q.limit.unwrap_or(DEFAULT_DECISIONS);
    if !(1..=MAX_DECISIONS).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_DECISIONS}"
        )));
    }
    q.limit = Some(limit);
    let jsonl = match q.format.as_deref() {
        None | Some("json") => false,
        Some("jsonl") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format '{other}': use json or jsonl"
            )));
        }
    };
    let items = admin(&state)?.decisions(&q);
    if jsonl {
        let mut text = String::new();
        for item in &items {
            text.push_str(&item.to_string());
            text.push('\n');
        }
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response());
    }
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}
