//! Data permission levels on a product's data (DAC-3): model admin, data admin, read-write,
//! read-only or none, each with an optional expiry. The `lotus.data.fields` policy turns a
//! caller's level into which properties a read returns, masked or removed.

use axum::extract::State;
use axum::http::StatusCode;
use lotus_storage::DataGrantRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Path};

const LEVELS: [&str; 5] = [
    "model_admin",
    "data_admin",
    "read_write",
    "read_only",
    "none",
];

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantRequest {
    /// `model_admin`, `data_admin`, `read_write`, `read_only` or `none`.
    pub level: String,
    /// Unix ms after which the level no longer applies; never when absent.
    pub expires_at: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataGrant {
    pub username: String,
    pub product_key: String,
    pub level: String,
    pub expires_at: Option<i64>,
    pub granted_by: String,
    pub granted_at: i64,
}

impl From<DataGrantRow> for DataGrant {
    fn from(g: DataGrantRow) -> Self {
        DataGrant {
            username: g.username,
            product_key: g.product_key,
            level: g.level,
            expires_at: g.expires_at,
            granted_by: g.granted_by,
            granted_at: g.granted_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DataGrantList {
    pub items: Vec<DataGrant>,
}

/// Give a user a data permission level on a product's data (replacing any earlier one).
#[utoipa::path(put, path = "/api/v1/products/{productKey}/data-grants/{username}", tag = "data permissions",
    security(("bearer" = [])), params(("productKey" = String, Path), ("username" = String, Path)),
    request_body = GrantRequest,
    responses((status = 200, body = DataGrant), (status = 404, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn put(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, username)): Path<(String, String)>,
    Json(req): Json<GrantRequest>,
) -> ApiResult<Json<DataGrant>> {
    crate::authz::product(&state, &user, "data_grant", "write", &pk).await?;
    if !LEVELS.contains(&req.level.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "level: one of {}",
            LEVELS.join(", ")
        )));
    }
    if req
        .expires_at
        .is_some_and(|at| at <= lotus_device::now_ms())
    {
        return Err(ApiError::unprocessable(
            "expiresAt: a time in the future (unix ms), or leave it out",
        ));
    }
    let row = state
        .store
        .set_data_grant(
            &username,
            &pk,
            &req.level,
            req.expires_at,
            &user.user.username,
        )
        .await?;
    tracing::info!(product = %pk, user = %username, level = %req.level, by = %user.user.username,
        "data permission granted");
    Ok(Json(row.into()))
}

/// Who holds which data permission level on a product.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/data-grants", tag = "data permissions",
    security(("bearer" = [])), params(("productKey" = String, Path)),
    responses((status = 200, body = DataGrantList)))]
pub async fn list(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
) -> ApiResult<Json<DataGrantList>> {
    crate::authz::product(&state, &user, "data_grant", "read", &pk).await?;
    let rows = state.store.data_grants_on_product(&pk).await?;
    Ok(Json(DataGrantList {
        items: rows.into_iter().map(DataGrant::from).collect(),
    }))
}

/// Withdraw a user's data permission level on a product.
#[utoipa::path(delete, path = "/api/v1/products/{productKey}/data-grants/{username}", tag = "data permissions",
    security(("bearer" = [])), params(("productKey" = String, Path), ("username" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn delete(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, username)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    crate::authz::product(&state, &user, "data_grant", "write", &pk).await?;
    if !state.store.delete_data_grant(&username, &pk).await? {
        return Err(ApiError::not_found(format!(
            "user '{username}' holds no data permission on {pk}"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}
