//! Application credentials: MQTT logins an operator creates for applications (ISV apps, city
//! dashboards), granted topic filters of products. The secret is shown once, at creation.

use axum::extract::State;
use axum::http::StatusCode;
use lotus_model::authz::{Grant, GrantAction};
use lotus_model::topic::AppGrant;
use lotus_mqtt::DisconnectReason;
use lotus_storage::{AppCredentialRow, AppCredentialUpdate};
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Path, Query};
use crate::products::{PageQuery, Paged};

/// Most grants one credential may hold.
const MAX_GRANTS: usize = 64;

/// A topic filter granted to an application.
#[derive(Serialize, Deserialize, ToSchema, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantDoc {
    /// `/{productKey}/…` or `/sys/{productKey}/…`; `+` and `#` allowed below the product key.
    #[schema(example = "/a1B2c3D4e5F/+/user/update")]
    pub filter: String,
    /// `subscribe` and/or `publish`; `["subscribe"]` when absent. Publish is limited to the
    /// product's custom topics that devices receive.
    #[serde(default)]
    #[schema(example = json!(["subscribe"]))]
    pub actions: Option<Vec<String>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAppCredential {
    pub name: String,
    pub grants: Vec<GrantDoc>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateAppCredential {
    pub name: Option<String>,
    /// Replaces every grant. Connected applications are disconnected so the change applies.
    pub grants: Option<Vec<GrantDoc>>,
    /// Disabling disconnects the application's connections.
    pub enabled: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppCredential {
    pub id: i64,
    pub name: String,
    /// The MQTT username.
    pub username: String,
    /// The MQTT password. Only in the response to creation: it is not shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub grants: Vec<GrantDoc>,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<AppCredentialRow> for AppCredential {
    fn from(r: AppCredentialRow) -> Self {
        AppCredential {
            id: r.id,
            name: r.name,
            username: r.username,
            secret: None,
            grants: r
                .grants
                .into_iter()
                .map(|g| GrantDoc {
                    filter: g.filter,
                    actions: Some(g.actions.iter().map(|a| a.as_str().to_string()).collect()),
                })
                .collect(),
            enabled: r.enabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

fn check_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(ApiError::unprocessable("name must be 1 to 64 characters"));
    }
    Ok(name.to_string())
}

/// Validates grants and names the offending field: `grants[1].filter: …`.
fn check_grants(state: &ApiState, grants: Vec<GrantDoc>) -> ApiResult<Vec<Grant>> {
    if grants.is_empty() || grants.len() > MAX_GRANTS {
        return Err(ApiError::unprocessable(format!(
            "grants: give 1 to {MAX_GRANTS} grants"
        )));
    }
    let mut out = Vec::with_capacity(grants.len());
    for (i, g) in grants.into_iter().enumerate() {
        let mut actions = Vec::new();
        for (j, a) in g
            .actions
            .unwrap_or_else(|| vec!["subscribe".into()])
            .iter()
            .enumerate()
        {
            let action = GrantAction::parse(a).ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "grants[{i}].actions[{j}]: unknown action '{a}' (use subscribe or publish)"
                ))
            })?;
            if !actions.contains(&action) {
                actions.push(action);
            }
        }
        if actions.is_empty() {
            return Err(ApiError::unprocessable(format!(
                "grants[{i}].actions: give subscribe and/or publish"
            )));
        }
        let grant = Grant {
            filter: g.filter,
            actions,
        };
        let compiled = AppGrant::compile(&grant)
            .map_err(|e| ApiError::unprocessable(format!("grants[{i}].filter: {e}")))?;
        if state.plane.registry.get(compiled.product_key()).is_none() {
            return Err(ApiError::unprocessable(format!(
                "grants[{i}].filter: unknown product '{}'",
                compiled.product_key()
            )));
        }
        out.push(grant);
    }
    Ok(out)
}

fn new_secret() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// Create an application credential. The secret (the MQTT password) is shown only in this
/// response.
#[utoipa::path(post, path = "/api/v1/app-credentials", tag = "applications", security(("bearer" = [])),
    request_body = CreateAppCredential,
    responses((status = 201, body = AppCredential), (status = 400, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<CreateAppCredential>,
) -> ApiResult<(StatusCode, Json<AppCredential>)> {
    crate::authz::global(&state, &user, "application", "write", "*")?;
    let name = check_name(&req.name)?;
    let grants = check_grants(&state, req.grants)?;
    let secret = new_secret();
    // A clash of 62^12 usernames is next to impossible; retry once anyway.
    let mut attempt = 0;
    let row = loop {
        let username = lotus_device::application::generate_username();
        match state
            .store
            .create_app_credential(&name, &username, &secret, &grants)
            .await
        {
            Err(lotus_storage::StorageError::Conflict(_)) if attempt == 0 => attempt += 1,
            other => break other?,
        }
    };
    tracing::info!(credential = row.id, username = %row.username, "application credential created");
    crate::audit::record(
        &state,
        &user.user.username,
        "application.credentials.issue",
        &format!("app-credential:{}", row.id),
        "ok",
        serde_json::json!({"username": row.username, "grants": grant_filters(&row.grants)}),
    )
    .await;
    let mut out = AppCredential::from(row);
    out.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

/// List application credentials (without secrets).
#[utoipa::path(get, path = "/api/v1/app-credentials", tag = "applications", security(("bearer" = [])),
    params(PageQuery), responses((status = 200, body = Paged<AppCredential>)))]
pub async fn list(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Paged<AppCredential>>> {
    crate::authz::global(&state, &user, "application", "read", "*")?;
    let (page, number, size) = q.page()?;
    let (rows, total) = state.store.list_app_credentials(page).await?;
    Ok(Json(Paged {
        items: rows.into_iter().map(AppCredential::from).collect(),
        total,
        page: number,
        page_size: size,
    }))
}

/// The topic filters of grants, as the audit log shows them.
fn grant_filters(grants: &[Grant]) -> Vec<&str> {
    grants.iter().map(|g| g.filter.as_str()).collect()
}

async fn credential_or_404(state: &ApiState, id: i64) -> ApiResult<AppCredentialRow> {
    state
        .store
        .get_app_credential(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("application credential {id} not found")))
}

/// Get an application credential (without its secret).
#[utoipa::path(get, path = "/api/v1/app-credentials/{id}", tag = "applications", security(("bearer" = [])),
    params(("id" = i64, Path)), responses((status = 200, body = AppCredential), (status = 404, body = crate::problem::Problem)))]
pub async fn get(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<i64>,
) -> ApiResult<Json<AppCredential>> {
    crate::authz::global(&state, &user, "application", "read", &id.to_string())?;
    Ok(Json(credential_or_404(&state, id).await?.into()))
}

/// Rename, re-grant, enable or disable an application credential. Changing the grants or
/// disabling it disconnects the application at once.
#[utoipa::path(patch, path = "/api/v1/app-credentials/{id}", tag = "applications", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = UpdateAppCredential,
    responses((status = 200, body = AppCredential), (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn update(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<i64>,
    Json(req): Json<UpdateAppCredential>,
) -> ApiResult<Json<AppCredential>> {
    crate::authz::global(&state, &user, "application", "write", &id.to_string())?;
    let name = req.name.as_deref().map(check_name).transpose()?;
    let grants = req.grants.map(|g| check_grants(&state, g)).transpose()?;
    let before = credential_or_404(&state, id).await?;
    let row = state
        .store
        .update_app_credential(
            id,
            &AppCredentialUpdate {
                name,
                grants,
                enabled: req.enabled,
            },
        )
        .await?;
    // Connections keep the grants they were admitted with, so a change that narrows them
    // (or a disable) must end those connections; the application reconnects with the new ones.
    if row.grants != before.grants || row.enabled != before.enabled {
        crate::audit::record(
            &state,
            &user.user.username,
            "application.credentials.change",
            &format!("app-credential:{id}"),
            "ok",
            serde_json::json!({
                "enabled": row.enabled,
                "grants": grant_filters(&row.grants),
                "grantsBefore": grant_filters(&before.grants),
            }),
        )
        .await;
    }
    if (before.enabled && !row.enabled) || (row.grants != before.grants) {
        let kicked = state
            .plane
            .kick_application(id, DisconnectReason::CredentialRevoked);
        tracing::info!(
            credential = id,
            connections = kicked,
            "application credential changed"
        );
    }
    Ok(Json(row.into()))
}

/// Delete an application credential; its connections are closed at once.
#[utoipa::path(delete, path = "/api/v1/app-credentials/{id}", tag = "applications", security(("bearer" = [])),
    params(("id" = i64, Path)), responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn delete(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    crate::authz::global(&state, &user, "application", "delete", &id.to_string())?;
    state.store.delete_app_credential(id).await?;
    crate::audit::record(
        &state,
        &user.user.username,
        "application.credentials.revoke",
        &format!("app-credential:{id}"),
        "ok",
        serde_json::json!({}),
    )
    .await;
    let kicked = state
        .plane
        .kick_application(id, DisconnectReason::CredentialRevoked);
    tracing::info!(
        credential = id,
        connections = kicked,
        "application credential deleted"
    );
    Ok(StatusCode::NO_CONTENT)
}
