//! The security audit log over the API: what the routes record (log-ins, lock-outs, accounts,
//! passwords, plugins, policies), and the audit administrator's view of it: the entries, and a
//! check that the hash chain is intact.

use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json};

/// Appends an entry. An audit log that cannot be written is an operator's emergency, but the
/// request it describes has already happened: it is logged loudly rather than undone.
pub async fn record(
    state: &ApiState,
    actor: &str,
    action: &str,
    target: &str,
    outcome: &str,
    detail: Value,
) {
    let entry = lotus_storage::NewAudit {
        actor,
        action,
        target,
        outcome,
        detail: &detail,
        at: lotus_device::now_ms(),
    };
    if let Err(e) = state.store.append_audit(&entry).await {
        tracing::error!(actor, action, target, error = %e, "the security audit log could not be written");
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct AuditQuery {
    /// Entries after this sequence number (default 0: from the first).
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// One audit entry.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// ok, denied or failed.
    pub outcome: String,
    pub detail: Value,
    /// SHA-256 of the previous entry (empty for the first) and of this one.
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub items: Vec<AuditEntry>,
}

/// Security audit entries, oldest first (`audit.read`: auditors and administrators).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 400, body = crate::problem::Problem),
        (status = 403, body = crate::problem::Problem)))]
pub async fn list(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditList>> {
    crate::authz::global(&state, &user, "audit", "read", "*")?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    let rows = state
        .store
        .audit_entries(q.after.unwrap_or(0).max(0), limit)
        .await?;
    Ok(Json(AuditList {
        items: rows
            .into_iter()
            .map(|r| AuditEntry {
                seq: r.seq,
                at: r.at,
                actor: r.actor,
                action: r.action,
                target: r.target,
                outcome: r.outcome,
                detail: r.detail,
                prev_hash: r.prev_hash,
                hash: r.hash,
            })
            .collect(),
    }))
}

/// The result of walking the chain.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditCheck {
    /// Every entry follows from the one before it and the log ends where the appends left it.
    pub intact: bool,
    /// Entries checked before the first break (all of them when intact).
    pub entries: i64,
    /// The first entry that breaks the chain, and why.
    pub broken_at: Option<i64>,
    pub detail: Option<String>,
}

/// Verify the audit log's hash chain (`audit.read`).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = AuditCheck), (status = 403, body = crate::problem::Problem)))]
pub async fn verify(
    State(state): State<ApiState>,
    user: Authenticated,
) -> ApiResult<Json<AuditCheck>> {
    crate::authz::global(&state, &user, "audit", "read", "*")?;
    let v = state.store.verify_audit().await?;
    record(
        &state,
        &user.user.username,
        "audit.verify",
        "audit",
        if v.broken.is_none() { "ok" } else { "failed" },
        serde_json::json!({"entries": v.entries, "brokenAt": v.broken.as_ref().map(|b| b.0)}),
    )
    .await;
    Ok(Json(AuditCheck {
        intact: v.broken.is_none(),
        entries: v.entries,
        broken_at: v.broken.as_ref().map(|b| b.0),
        detail: v.broken.map(|b| b.1),
    }))
}
