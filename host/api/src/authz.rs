//! Every API route asks the `lotus.api` policy whether its caller may do what it asks, on the
//! resource it names: `{principal, action, resource}` in, allow or deny with a reason out.
//!
//! The API never decides itself. It finds the facts the policy needs (the caller's roles,
//! organisation and region; the product's or device's organisation and region) and turns a
//! deny into a 403 problem that carries the policy's reason. Lists ask the policy once for a
//! filter (`list_scope`) that the query applies, then check each row, so a page never shows a
//! row the policy would refuse to show on its own.

use lotus_model::scope::Scope;
use lotus_storage::{ProductRow, UserRow};
use serde_json::{Value, json};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult};

/// The `lotus.api` decision point, implemented by the binary over the policy engine.
pub trait ApiPolicy: Send + Sync + 'static {
    /// `Err(reason)` when the policy denies `input` (`{principal, action, resource}`).
    fn authorize(&self, input: &Value) -> Result<(), String>;
    /// The scope a list of `kind` must be confined to for this principal (`None`: no limit).
    fn list_scope(&self, principal: &Value, kind: &str) -> Result<Option<Scope>, String>;
    /// `lotus.data.fields`: the action for each field (`keep`, `mask`, `hash`, `remove`) of a
    /// read of a product's data, or `Err(reason)` when the caller may not read it at all.
    fn data_fields(&self, input: &Value) -> Result<Value, String>;
    /// `lotus.approval`: whether `input` (`{principal, action, resource}`) needs someone's
    /// approval before it is carried out, and whose.
    fn approval(&self, input: &Value) -> Result<Approval, String>;
}

/// What `lotus.approval` answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Approval {
    pub required: bool,
    /// Roles any one of which may approve; never the requester themselves.
    pub approvers: Vec<String>,
    pub reason: String,
}

/// What the policy sees of a logged-in user.
pub fn user_principal(user: &UserRow) -> Value {
    json!({
        "kind": "user",
        "id": user.id.to_string(),
        "username": user.username,
        "org": user.scope.org,
        "region": user.scope.region,
        "roles": user.roles,
    })
}

/// A resource as the policy sees it.
pub fn resource(kind: &str, id: &str, scope: Option<&Scope>) -> Value {
    match scope {
        Some(s) => json!({"kind": kind, "id": id, "org": s.org, "region": s.region}),
        None => json!({"kind": kind, "id": id}),
    }
}

/// Asks the policy; a deny is a 403 that says why.
pub fn check(
    state: &ApiState,
    user: &Authenticated,
    action: &str,
    resource: Value,
) -> ApiResult<()> {
    let input = json!({
        "principal": user_principal(&user.user),
        "action": action,
        "resource": resource,
    });
    state.policy.authorize(&input).map_err(|reason| {
        ApiError::forbidden(format!("{action} denied by policy lotus.api: {reason}"))
    })
}

/// Like [`check`], as a yes/no for filtering rows.
pub fn allows(state: &ApiState, user: &Authenticated, action: &str, resource: Value) -> bool {
    check(state, user, action, resource).is_ok()
}

/// The filter a list of `kind` gets for this caller.
pub fn list_scope(state: &ApiState, user: &Authenticated, kind: &str) -> ApiResult<Option<Scope>> {
    state
        .policy
        .list_scope(&user_principal(&user.user), kind)
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("policy lotus.api: {e}"),
            )
        })
}

/// Loads a product and checks `{kind}.{verb}` on it (kind `product`, or a part of a product:
/// `thing_model`, `topic_class`, `codec`). 404 when it does not exist.
pub async fn product(
    state: &ApiState,
    user: &Authenticated,
    kind: &str,
    verb: &str,
    pk: &str,
) -> ApiResult<ProductRow> {
    let row = crate::products::product_or_404(state, pk).await?;
    check(
        state,
        user,
        &format!("{kind}.{verb}"),
        resource(kind, pk, Some(&row.scope)),
    )?;
    Ok(row)
}

/// Checks `{kind}.{verb}` on a device (kind `device`, `shadow`, …); 404 when it does not exist.
pub async fn device(
    state: &ApiState,
    user: &Authenticated,
    kind: &str,
    verb: &str,
    pk: &str,
    dn: &str,
) -> ApiResult<Scope> {
    let scope = state
        .store
        .device_scope(pk, dn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device '{pk}/{dn}' not found")))?;
    check(
        state,
        user,
        &format!("{kind}.{verb}"),
        resource(kind, &format!("{pk}/{dn}"), Some(&scope)),
    )?;
    Ok(scope)
}

/// What the caller may see of a product's device data: the `lotus.data.fields` actions for
/// each property of its thing model, from the caller's data permission levels (DAC-3).
/// 403 with the policy's reason when the caller may not read the data at all.
pub async fn data_fields(state: &ApiState, user: &Authenticated, pk: &str) -> ApiResult<Value> {
    let grants = state.store.data_grants_of_user(user.user.id).await?;
    let mut levels = serde_json::Map::new();
    for g in grants {
        levels.insert(
            g.product_key,
            json!({"level": g.level, "expires_at": g.expires_at}),
        );
    }
    let mut principal = user_principal(&user.user);
    principal["data_levels"] = Value::Object(levels);
    let fields: Vec<Value> = state
        .plane
        .registry
        .get(pk)
        .and_then(|p| p.thing_model.clone())
        .map(|tm| {
            tm.model
                .properties()
                .iter()
                .map(|p| json!({"name": p.identifier, "sensitivity": p.sensitivity.as_str()}))
                .collect()
        })
        .unwrap_or_default();
    let input = json!({
        "principal": principal,
        "now": lotus_device::now_ms(),
        "model": pk,
        "fields": fields,
    });
    state.policy.data_fields(&input).map_err(|reason| {
        ApiError::forbidden(format!(
            "reading the data of {pk} denied by policy lotus.data.fields: {reason}"
        ))
    })
}

/// Checks an action on something without a region (plugins, policies, users, the decision
/// log): `resource` is `{kind, id}`.
pub fn global(
    state: &ApiState,
    user: &Authenticated,
    kind: &str,
    verb: &str,
    id: &str,
) -> ApiResult<()> {
    check(
        state,
        user,
        &format!("{kind}.{verb}"),
        resource(kind, id, None),
    )
}
