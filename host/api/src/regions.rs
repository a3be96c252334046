//! The city's administrative regions as a tree: `/hz` (杭州市), `/hz/xihu` (西湖区), … A
//! region's path is what users', products' and devices' scopes hold, so a region is named and
//! placed here but never renamed in its path; its parent is the path without the last segment.
//!
//! A node with no regions defined accepts any well-formed region path in scopes, as it did
//! before the tree existed; once the tree has entries, a scope in an unknown region is refused
//! with the nearest region that does exist ([`require_known`]).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use lotus_model::scope::parse_region;
use lotus_storage::{Occupancy, RegionRow, region_is_child};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Path, Query};

const MAX_NAME: usize = 64;

/// An administrative region.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    #[schema(example = "/hz/xihu")]
    pub path: String,
    #[schema(example = "西湖区")]
    pub name: String,
    /// The national administrative division code.
    #[schema(example = "330106")]
    pub code: Option<String>,
    /// The region above it; `/` (the whole city) at the top.
    #[schema(example = "/hz")]
    pub parent: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<RegionRow> for Region {
    fn from(r: RegionRow) -> Self {
        Region {
            parent: parent_of(&r.path).to_string(),
            path: r.path,
            name: r.name,
            code: r.code,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RegionList {
    /// Parents before their children (ordered by path).
    pub items: Vec<Region>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RegionQuery {
    /// Only the regions directly below this one (`/` for the top level); the whole tree when
    /// absent.
    pub parent: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRegion {
    /// Its place in the tree: the parent's path and one more segment.
    #[schema(example = "/hz/xihu")]
    pub path: String,
    #[schema(example = "西湖区")]
    pub name: String,
    /// 6 to 12 digits; none when absent or empty.
    #[serde(default)]
    pub code: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRegion {
    pub name: Option<String>,
    /// An empty string clears it.
    pub code: Option<String>,
}

/// The path one level up (`/` at the top).
pub fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// A region path from a URL: `hz/xihu` (the wildcard route) or `/hz/xihu` (percent-encoded).
fn path_param(raw: &str) -> ApiResult<String> {
    let path = if raw.starts_with('/') {
        raw.to_string()
    } else {
        format!("/{raw}")
    };
    if path == "/" {
        return Err(ApiError::unprocessable(
            "the whole city (`/`) is not a region that can be changed or deleted",
        ));
    }
    parse_region(&path).map_err(|e| ApiError::unprocessable(e.to_string()))
}

pub(crate) fn name(value: &str) -> ApiResult<String> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > MAX_NAME || v.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(format!(
            "name: 1 to {MAX_NAME} characters, without control characters"
        )));
    }
    Ok(v.to_string())
}

fn code(value: Option<String>) -> ApiResult<Option<String>> {
    let Some(v) = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    if !(6..=12).contains(&v.len()) || !v.chars().all(|c| c.is_ascii_digit()) {
        return Err(ApiError::unprocessable(
            "code: the administrative division code, 6 to 12 digits (e.g. 330106)",
        ));
    }
    Ok(Some(v))
}

/// What the policy sees of a region: it lies in itself.
fn resource(path: &str) -> serde_json::Value {
    serde_json::json!({"kind": "region", "id": path, "region": path})
}

/// "2 sub-region(s), 3 user(s)" for what is non-zero.
pub(crate) fn describe(o: &Occupancy, children: &str) -> String {
    [
        (o.children, children),
        (o.users, "user(s)"),
        (o.products, "product(s)"),
        (o.devices, "device(s)"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect::<Vec<_>>()
    .join(", ")
}

/// Refuses a scope in a region the tree does not have, once the tree has any region: a 422
/// that names the nearest region that exists. The whole city is always known.
pub async fn require_known(state: &ApiState, region: &str) -> ApiResult<()> {
    if region == "/" || state.store.region(region).await?.is_some() {
        return Ok(());
    }
    if state.store.region_count().await? == 0 {
        return Ok(());
    }
    let mut nearest = parent_of(region);
    while nearest != "/" && state.store.region(nearest).await?.is_none() {
        nearest = parent_of(nearest);
    }
    Err(ApiError::unprocessable(format!(
        "region: '{region}' is not in the region tree; the nearest existing region is \
         '{nearest}': pick a region under it, or create '{region}' first (POST /api/v1/regions)"
    )))
}

/// The region tree, or the regions directly below one (each checked with `region.read`).
#[utoipa::path(get, path = "/api/v1/regions", tag = "regions", security(("bearer" = [])),
    params(RegionQuery),
    responses((status = 200, body = RegionList), (status = 403, body = crate::problem::Problem)))]
pub async fn list(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<RegionQuery>,
) -> ApiResult<Json<RegionList>> {
    crate::authz::check(
        &state,
        &user,
        "region.read",
        serde_json::json!({"kind": "region", "id": "*"}),
    )?;
    let parent = q
        .parent
        .map(|p| parse_region(&p).map_err(|e| ApiError::bad_request(format!("parent: {e}"))))
        .transpose()?;
    let rows = state.store.regions().await?;
    Ok(Json(RegionList {
        items: rows
            .into_iter()
            .filter(|r| {
                parent
                    .as_deref()
                    .is_none_or(|p| region_is_child(p, &r.path))
            })
            .filter(|r| crate::authz::allows(&state, &user, "region.read", resource(&r.path)))
            .map(Region::from)
            .collect(),
    }))
}

/// A region.
#[utoipa::path(get, path = "/api/v1/regions/{path}", tag = "regions", security(("bearer" = [])),
    params(("path" = String, Path, description = "The region's path without its leading '/' (hz/xihu), or percent-encoded")),
    responses((status = 200, body = Region), (status = 404, body = crate::problem::Problem)))]
pub async fn get_one(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<Json<Region>> {
    let path = path_param(&raw)?;
    crate::authz::check(&state, &user, "region.read", resource(&path))?;
    let row = state
        .store
        .region(&path)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("region '{path}' not found")))?;
    Ok(Json(row.into()))
}

/// Add a region below an existing one (or at the top, below the whole city).
#[utoipa::path(post, path = "/api/v1/regions", tag = "regions", security(("bearer" = [])),
    request_body = CreateRegion,
    responses((status = 201, body = Region), (status = 403, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<CreateRegion>,
) -> ApiResult<(StatusCode, Json<Region>)> {
    let path =
        parse_region(req.path.trim()).map_err(|e| ApiError::unprocessable(format!("path: {e}")))?;
    if path == "/" {
        return Err(ApiError::unprocessable(
            "path: `/` is the whole city, which always exists; give a region below it, e.g. /hz",
        ));
    }
    crate::authz::check(&state, &user, "region.write", resource(&path))?;
    let name = name(&req.name)?;
    let code = code(req.code)?;
    let parent = parent_of(&path);
    if parent != "/" && state.store.region(parent).await?.is_none() {
        return Err(ApiError::unprocessable(format!(
            "path: the parent region '{parent}' does not exist: create it first"
        )));
    }
    let row = state
        .store
        .create_region(&path, &name, code.as_deref())
        .await?;
    tracing::info!(region = %path, by = %user.user.username, "region created");
    crate::audit::record(
        &state,
        &user.user.username,
        "region.create",
        &format!("region:{path}"),
        "ok",
        serde_json::json!({"name": row.name, "code": row.code}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Rename a region or change its code (its path, which scopes hold, stays).
#[utoipa::path(patch, path = "/api/v1/regions/{path}", tag = "regions", security(("bearer" = [])),
    params(("path" = String, Path, description = "The region's path without its leading '/' (hz/xihu), or percent-encoded")),
    request_body = UpdateRegion,
    responses((status = 200, body = Region), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn update(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(raw): Path<String>,
    Json(req): Json<UpdateRegion>,
) -> ApiResult<Json<Region>> {
    let path = path_param(&raw)?;
    crate::authz::check(&state, &user, "region.write", resource(&path))?;
    let new_name = req.name.as_deref().map(name).transpose()?;
    let new_code = match req.code {
        Some(c) => Some(code(Some(c))?),
        None => None,
    };
    let row = state
        .store
        .update_region(
            &path,
            new_name.as_deref(),
            new_code.as_ref().map(Option::as_deref),
        )
        .await?;
    crate::audit::record(
        &state,
        &user.user.username,
        "region.update",
        &format!("region:{path}"),
        "ok",
        serde_json::json!({"name": row.name, "code": row.code}),
    )
    .await;
    Ok(Json(row.into()))
}

/// Delete a region that nothing is in: no regions below it, and no users, products or
/// devices in it (409 says what is left).
#[utoipa::path(delete, path = "/api/v1/regions/{path}", tag = "regions", security(("bearer" = [])),
    params(("path" = String, Path, description = "The region's path without its leading '/' (hz/xihu), or percent-encoded")),
    responses((status = 204), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn delete(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    let path = path_param(&raw)?;
    crate::authz::check(&state, &user, "region.delete", resource(&path))?;
    if state.store.region(&path).await?.is_none() {
        return Err(ApiError::not_found(format!("region '{path}' not found")));
    }
    let occupancy = state.store.region_occupancy(&path).await?;
    if !occupancy.is_empty() {
        return Err(ApiError::conflict(format!(
            "region '{path}' is still in use: {} in it; delete the sub-regions and move the \
             users, products and devices elsewhere first",
            describe(&occupancy, "sub-region(s)")
        )));
    }
    state.store.delete_region(&path).await?;
    tracing::info!(region = %path, by = %user.user.username, "region deleted");
    crate::audit::record(
        &state,
        &user.user.username,
        "region.delete",
        &format!("region:{path}"),
        "ok",
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of the region tree.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/regions", get(list).post(create))
        .route(
            "/api/v1/regions/{*path}",
            get(get_one).patch(update).delete(delete),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(list, get_one, create, update, delete),
    tags((name = "regions", description = "The administrative region tree scopes refer to"))
)]
pub struct RegionsDoc;

#[cfg(test)]
mod tests {
    use super::parent_of;

    #[test]
    fn parents() {
        assert_eq!(parent_of("/hz"), "/");
        assert_eq!(parent_of("/hz/xihu"), "/hz");
        assert_eq!(parent_of("/hz/xihu/lingyin"), "/hz/xihu");
    }
}
