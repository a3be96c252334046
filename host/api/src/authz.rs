//! Every API route asks the `lotus.api` policy whether its caller may do what it asks, on the
//! resource it names: `{principal, action, resource}` in, allow or deny with a reason out.
//!
//! The API never decides itself. It finds the facts the policy needs (the caller's roles,
//! organisation and region; the product's or device's organisation and region) and turns a
//! deny into a 403 problem that carries the policy's reason. Lists ask the policy once for a
//! filter (`list_scope`) that the query applies, then check each row, so a page never shows a
//! row the policy would refuse to show on its own.

use lotus_model::scope::Scope;
use lotus_storage::{AppRow, ProductRow, UserRow};
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
        // What the custom roles among them permit (`<kind>.<verb>`), checked by the policy
        // within the user's scope.
        "permissions": user.permissions,
        // Their organisation and every one below it: a city department sees its sub-units'.
        "orgs": user.org_subtree,
    })
}

/// What the policy sees of an app: its API actions (`apis`) and granted resources.
pub fn app_principal(app: &AppRow) -> Value {
    json!({
        "kind": "app",
        "id": app.client_id,
        "name": app.name,
        "org": app.scope.org,
        "region": app.scope.region,
        "apis": app.scopes,
        "resources": app.resources,
    })
}

/// What the policy sees of the caller, user or app.
pub fn principal(caller: &Authenticated) -> Value {
    match caller.app() {
        Some(app) => {
            let mut principal = app_principal(app);
            principal["orgs"] = json!(caller.user.org_subtree);
            principal
        }
        None => user_principal(&caller.user),
    }
}

/// Apps have no personal center, tasks or messages: those routes act on a person, so an app
/// is refused before any of them is reached, whatever its grants.
fn refuse_app_on_personal_kinds(caller: &Authenticated, action: &str) -> ApiResult<()> {
    let Some(app) = caller.app() else {
        return Ok(());
    };
    let what = match action.split('.').next().unwrap_or_default() {
        "profile" => "apps have no personal center",
        "task" => "apps have no tasks: tasks are assigned to people",
        "message" => "apps have no message center",
        _ => return Ok(()),
    };
    Err(ApiError::forbidden(format!(
        "{what} (app {} called {action}); sign in as a user for this",
        app.client_id
    )))
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
    refuse_app_on_personal_kinds(user, action)?;
    let input = json!({
        "principal": principal(user),
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
        .list_scope(&principal(user), kind)
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
///
/// An app's data models (`resources.dataModels`) are its `read_only` levels: it reads the
/// readings of those products, with personal data masked and secrets removed, like an
/// operator without a grant.
pub async fn data_fields(state: &ApiState, user: &Authenticated, pk: &str) -> ApiResult<Value> {
    let mut levels = serde_json::Map::new();
    if let Some(app) = user.app() {
        for model in &app.resources.data_models {
            levels.insert(
                model.clone(),
                json!({"level": "read_only", "expires_at": null}),
            );
        }
    } else {
        for g in state.store.data_grants_of_user(user.user.id).await? {
            levels.insert(
                g.product_key,
                json!({"level": g.level, "expires_at": g.expires_at}),
            );
        }
    }
    let mut principal = principal(user);
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
