//! Roles: the built-in ones the `lotus.api` policy names (read-only here, with what each may
//! do), and custom roles administrators define as a list of `<kind>.<verb>` actions. Users hold
//! custom roles like built-in ones; the host passes what they permit to the policy as
//! `principal.permissions`, which grants them within the holder's organisation and region.
//!
//! Policy, audit, decision-log, account and role management are never grantable: they stay
//! with the separated system, security and audit administrators (MLPS level 3). The API
//! refuses such a role with a 422 and the policy refuses it again on its own.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use lotus_storage::RoleRow;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Path};

const MAX_NAME: usize = 32;
const MAX_DESCRIPTION: usize = 256;
const MAX_PERMISSIONS: usize = 128;

/// The roles `policies/api.rego` names, and what it lets each do.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "admin",
        "System administrator: everything, everywhere, except holding the security \
         administrator's or auditor's role as well.",
    ),
    (
        "operator",
        "Reads, writes, deletes and invokes devices, products, thing models, topic classes, \
         shadows, codecs, gateways, applications and dead letters; rules, alarms and events; \
         reads plugins, event types, workflows, channels, templates and deliveries; within \
         their organisation and region.",
    ),
    (
        "viewer",
        "Reads what operators manage (device plane, rules, alarms, events), within their \
         organisation and region.",
    ),
    (
        "dispatcher",
        "Reads and disposes of alarms and events within their organisation and region.",
    ),
    (
        "data_admin",
        "Hands out data permission levels on the products within their organisation and region.",
    ),
    (
        "security_admin",
        "Security administrator: manages policies, reads the decision log and the roles, \
         everywhere.",
    ),
    (
        "auditor",
        "Audit administrator: reads the security audit log, the decision log and the roles, \
         everywhere.",
    ),
];

/// Kinds whose actions stay with the separated administrator roles.
pub const RESERVED_KINDS: &[&str] = &["policy", "audit", "decision", "user", "role"];

/// Kinds a custom role may be granted actions on (what the policy knows).
pub const GRANTABLE_KINDS: &[&str] = &[
    "device",
    "product",
    "thing_model",
    "topic_class",
    "shadow",
    "codec",
    "gateway",
    "application",
    "dead_letter",
    "plugin",
    "rule",
    "alarm",
    "event",
    "event_type",
    "workflow",
    "channel",
    "template",
    "delivery",
    "data_grant",
    "region",
    "org",
];

/// The verbs of an action.
pub const VERBS: &[&str] = &["read", "write", "delete", "invoke", "admin"];

/// A role, built in or custom.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    #[schema(example = "inspector")]
    pub name: String,
    pub description: String,
    /// Defined by the policy (read-only) rather than by an administrator.
    pub built_in: bool,
    /// A custom role's `<kind>.<verb>` actions; empty for built-in roles, whose rights the
    /// description gives.
    #[schema(example = json!(["device.read", "device.invoke"]))]
    pub permissions: Vec<String>,
    /// When a custom role was created and last changed.
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

impl From<RoleRow> for Role {
    fn from(r: RoleRow) -> Self {
        Role {
            name: r.name,
            description: r.description,
            built_in: false,
            permissions: r.permissions,
            created_at: Some(r.created_at),
            updated_at: Some(r.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleList {
    /// Built-in roles first, then custom ones by name.
    pub items: Vec<Role>,
    /// Every action a custom role may be granted.
    pub grantable: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRole {
    /// 1 to 32 lower-case letters and '_', starting with a letter (as users' roles are); not
    /// a built-in role's name.
    #[schema(example = "inspector")]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[schema(example = json!(["device.read", "device.invoke"]))]
    pub permissions: Vec<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRole {
    pub description: Option<String>,
    /// Replaces every permission; holders get the new ones with their next request.
    pub permissions: Option<Vec<String>>,
}

/// Is `name` one of the policy's built-in roles?
pub fn is_built_in(name: &str) -> bool {
    BUILT_IN.iter().any(|(n, _)| *n == name)
}

/// Every action a custom role may be granted.
pub fn grantable() -> Vec<String> {
    GRANTABLE_KINDS
        .iter()
        .flat_map(|k| VERBS.iter().map(move |v| format!("{k}.{v}")))
        .collect()
}

fn role_name(value: &str) -> ApiResult<String> {
    let v = value.trim();
    let shaped = !v.is_empty()
        && v.len() <= MAX_NAME
        && v.starts_with(|c: char| c.is_ascii_lowercase())
        && v.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    if !shaped {
        return Err(ApiError::unprocessable(format!(
            "name: 1 to {MAX_NAME} lower-case letters and '_', starting with a letter \
             (e.g. inspector)"
        )));
    }
    if is_built_in(v) {
        return Err(ApiError::unprocessable(format!(
            "name: '{v}' is a built-in role; choose another name"
        )));
    }
    Ok(v.to_string())
}

fn description(value: &str) -> ApiResult<String> {
    let v = value.trim();
    if v.chars().count() > MAX_DESCRIPTION || v.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::unprocessable(format!(
            "description: at most {MAX_DESCRIPTION} characters, without control characters"
        )));
    }
    Ok(v.to_string())
}

/// Checks each permission, naming the one to fix; sorted, without repeats. A role may have
/// none: then a rule of the `lotus.api` policy (`has_role("…")`) says what it may do, and the
/// registry only makes the name assignable.
fn permissions(value: Vec<String>) -> ApiResult<Vec<String>> {
    if value.len() > MAX_PERMISSIONS {
        return Err(ApiError::unprocessable(format!(
            "permissions: give at most {MAX_PERMISSIONS} actions such as device.read"
        )));
    }
    let mut out = Vec::with_capacity(value.len());
    for (i, p) in value.into_iter().enumerate() {
        let p = p.trim().to_string();
        let Some((kind, verb)) = p.split_once('.') else {
            return Err(ApiError::unprocessable(format!(
                "permissions[{i}]: '{p}' is not <kind>.<verb> (e.g. device.read)"
            )));
        };
        if RESERVED_KINDS.contains(&kind) {
            return Err(ApiError::unprocessable(format!(
                "permissions[{i}]: {p} cannot be granted by a custom role: policy, audit, \
                 decision-log, account and role management stay with the built-in security \
                 administrator, auditor and system administrator roles"
            )));
        }
        if !GRANTABLE_KINDS.contains(&kind) {
            return Err(ApiError::unprocessable(format!(
                "permissions[{i}]: unknown kind '{kind}' (one of {})",
                GRANTABLE_KINDS.join(", ")
            )));
        }
        if !VERBS.contains(&verb) {
            return Err(ApiError::unprocessable(format!(
                "permissions[{i}]: unknown verb '{verb}' (one of {})",
                VERBS.join(", ")
            )));
        }
        out.push(p);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// What the policy sees of a custom role being written: its permissions too, so that it can
/// refuse reserved ones itself.
fn resource(name: &str, permissions: Option<&[String]>) -> serde_json::Value {
    match permissions {
        Some(p) => serde_json::json!({"kind": "role", "id": name, "permissions": p}),
        None => serde_json::json!({"kind": "role", "id": name}),
    }
}

/// Refuses roles that are neither built in nor defined, naming them.
pub(crate) async fn require_known(state: &ApiState, roles: &[String]) -> ApiResult<()> {
    let custom = state.store.roles().await?;
    let unknown: Vec<&str> = roles
        .iter()
        .filter(|r| !is_built_in(r) && !custom.iter().any(|c| &c.name == *r))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::unprocessable(format!(
            "roles: unknown role(s) {}: use a built-in role ({}) or create the custom role first",
            unknown.join(", "),
            BUILT_IN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// The built-in roles and the custom ones (`role.read`).
#[utoipa::path(get, path = "/api/v1/roles", tag = "roles", security(("bearer" = [])),
    responses((status = 200, body = RoleList), (status = 403, body = crate::problem::Problem)))]
pub async fn list(State(state): State<ApiState>, user: Authenticated) -> ApiResult<Json<RoleList>> {
    crate::authz::global(&state, &user, "role", "read", "*")?;
    let mut items: Vec<Role> = BUILT_IN
        .iter()
        .map(|(name, description)| Role {
            name: (*name).into(),
            description: (*description).into(),
            built_in: true,
            permissions: Vec::new(),
            created_at: None,
            updated_at: None,
        })
        .collect();
    items.extend(state.store.roles().await?.into_iter().map(Role::from));
    Ok(Json(RoleList {
        items,
        grantable: grantable(),
    }))
}

/// A role.
#[utoipa::path(get, path = "/api/v1/roles/{name}", tag = "roles", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 200, body = Role), (status = 404, body = crate::problem::Problem)))]
pub async fn get_one(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(name): Path<String>,
) -> ApiResult<Json<Role>> {
    crate::authz::global(&state, &user, "role", "read", &name)?;
    if let Some((n, d)) = BUILT_IN.iter().find(|(n, _)| *n == name) {
        return Ok(Json(Role {
            name: (*n).into(),
            description: (*d).into(),
            built_in: true,
            permissions: Vec::new(),
            created_at: None,
            updated_at: None,
        }));
    }
    let row = state
        .store
        .role(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("role '{name}' not found")))?;
    Ok(Json(row.into()))
}

/// Define a custom role.
#[utoipa::path(post, path = "/api/v1/roles", tag = "roles", security(("bearer" = [])),
    request_body = CreateRole,
    responses((status = 201, body = Role), (status = 403, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<CreateRole>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    crate::authz::check(&state, &user, "role.write", resource(req.name.trim(), None))?;
    let name = role_name(&req.name)?;
    let description = description(&req.description)?;
    let permissions = permissions(req.permissions)?;
    crate::authz::check(
        &state,
        &user,
        "role.write",
        resource(&name, Some(&permissions)),
    )?;
    let row = state
        .store
        .create_role(&name, &description, &permissions)
        .await?;
    tracing::info!(role = %name, permissions = ?row.permissions, by = %user.user.username, "role created");
    crate::audit::record(
        &state,
        &user.user.username,
        "role.create",
        &format!("role:{name}"),
        "ok",
        serde_json::json!({"permissions": row.permissions, "description": row.description}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Change a custom role's description or permissions.
#[utoipa::path(patch, path = "/api/v1/roles/{name}", tag = "roles", security(("bearer" = [])),
    params(("name" = String, Path)), request_body = UpdateRole,
    responses((status = 200, body = Role), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn update(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(name): Path<String>,
    Json(req): Json<UpdateRole>,
) -> ApiResult<Json<Role>> {
    crate::authz::check(&state, &user, "role.write", resource(&name, None))?;
    if is_built_in(&name) {
        return Err(ApiError::unprocessable(format!(
            "'{name}' is a built-in role: what it may do is the lotus.api policy's to say"
        )));
    }
    let before = state
        .store
        .role(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("role '{name}' not found")))?;
    let new_description = req.description.as_deref().map(description).transpose()?;
    let new_permissions = req.permissions.map(permissions).transpose()?;
    if let Some(p) = &new_permissions {
        crate::authz::check(&state, &user, "role.write", resource(&name, Some(p)))?;
    }
    let row = state
        .store
        .update_role(
            &name,
            new_description.as_deref(),
            new_permissions.as_deref(),
        )
        .await?;
    crate::audit::record(
        &state,
        &user.user.username,
        "role.update",
        &format!("role:{name}"),
        "ok",
        serde_json::json!({"before": before.permissions, "permissions": row.permissions,
            "description": row.description}),
    )
    .await;
    Ok(Json(row.into()))
}

/// Delete a custom role nobody holds (409 names the holders).
#[utoipa::path(delete, path = "/api/v1/roles/{name}", tag = "roles", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn delete(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    crate::authz::check(&state, &user, "role.delete", resource(&name, None))?;
    if is_built_in(&name) {
        return Err(ApiError::unprocessable(format!(
            "'{name}' is a built-in role and cannot be deleted"
        )));
    }
    if !state.store.delete_role(&name).await? {
        return Err(ApiError::not_found(format!("role '{name}' not found")));
    }
    tracing::info!(role = %name, by = %user.user.username, "role deleted");
    crate::audit::record(
        &state,
        &user.user.username,
        "role.delete",
        &format!("role:{name}"),
        "ok",
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of roles.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/roles", get(list).post(create))
        .route(
            "/api/v1/roles/{name}",
            get(get_one).patch(update).delete(delete),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(list, get_one, create, update, delete),
    tags((name = "roles", description = "Built-in roles and custom roles of <kind>.<verb> actions"))
)]
pub struct RolesDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_unknown_permissions_are_refused() {
        assert_eq!(
            permissions(vec![
                "device.read".into(),
                "device.read".into(),
                "alarm.write".into()
            ])
            .unwrap(),
            vec!["alarm.write", "device.read"]
        );
        for bad in [
            "policy.write",
            "audit.read",
            "user.write",
            "role.write",
            "decision.read",
        ] {
            let e = permissions(vec![bad.into()]).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(e.detail.contains("cannot be granted"), "{}", e.detail);
        }
        assert!(permissions(vec!["device".into()]).is_err());
        assert!(permissions(vec!["spaceship.read".into()]).is_err());
        assert!(permissions(vec!["device.fly".into()]).is_err());
        assert_eq!(permissions(vec![]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn names() {
        assert_eq!(role_name(" inspector ").unwrap(), "inspector");
        assert!(role_name("admin").is_err());
        assert!(role_name("Inspector").is_err());
        assert!(role_name("1st").is_err());
        assert!(role_name("team2").is_err());
        assert!(role_name("").is_err());
    }
}
