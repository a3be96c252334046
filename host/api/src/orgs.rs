//! The city's organisations as a tree: a bureau, its departments, the contractors working for
//! them. An organisation's id is what users' and products' `org` holds; `parent` places it in
//! the tree. The `lotus.api` policy compares organisations by id (a user of `water` acts on
//! `water`'s products, not on those of its sub-organisations).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use lotus_model::scope::{parse_org, parse_region};
use lotus_storage::OrgRow;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Path, Query};

const MAX_CONTACT: usize = 128;

/// An organisation.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Org {
    /// What users' and products' `org` holds.
    #[schema(example = "water")]
    pub id: String,
    /// The organisation above it; none at the top.
    #[schema(example = "city")]
    pub parent: Option<String>,
    #[schema(example = "市水务集团")]
    pub name: String,
    /// The region it works in.
    #[schema(example = "/hz")]
    pub region: Option<String>,
    pub contact: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<OrgRow> for Org {
    fn from(r: OrgRow) -> Self {
        Org {
            id: r.id,
            parent: r.parent,
            name: r.name,
            region: r.region,
            contact: r.contact,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct OrgList {
    /// By id; `parent` links them into the tree.
    pub items: Vec<Org>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrgQuery {
    /// Only the organisations directly below this one (empty: the top level); all of them
    /// when absent.
    pub parent: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrg {
    /// Up to 64 letters, digits, '-', '_' and '.'.
    #[schema(example = "water")]
    pub id: String,
    pub name: String,
    /// An existing organisation's id; none (the top level) when absent or empty.
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub contact: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateOrg {
    pub name: Option<String>,
    /// An empty string clears it.
    pub region: Option<String>,
    /// An empty string clears it.
    pub contact: Option<String>,
}

/// What the policy sees of an organisation: it belongs to itself, in the region it works in.
fn resource(id: &str, region: Option<&str>) -> serde_json::Value {
    match region {
        Some(r) => serde_json::json!({"kind": "org", "id": id, "org": id, "region": r}),
        None => serde_json::json!({"kind": "org", "id": id, "org": id}),
    }
}

fn org_id(value: &str) -> ApiResult<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::unprocessable(
            "id: up to 64 letters, digits, '-', '_' and '.' (e.g. water)",
        ));
    }
    parse_org(v).map_err(|e| ApiError::unprocessable(format!("id: {e}")))
}

/// A region as given (empty meaning none), known to the region tree when it has entries.
async fn region(state: &ApiState, value: Option<String>) -> ApiResult<Option<String>> {
    let Some(v) = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let r = parse_region(&v).map_err(|e| ApiError::unprocessable(format!("region: {e}")))?;
    crate::regions::require_known(state, &r).await?;
    Ok(Some(r))
}

fn contact(value: Option<String>) -> ApiResult<Option<String>> {
    let Some(v) = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    if v.chars().count() > MAX_CONTACT || v.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(format!(
            "contact: at most {MAX_CONTACT} characters, without control characters"
        )));
    }
    Ok(Some(v))
}

/// Refuses a scope in an organisation the tree does not have, once the tree has any
/// organisation (before, any id is accepted, as deployments without a tree expect): a 422 that
/// says how to fix it. No organisation (`""`) is always allowed.
pub async fn require_known(state: &ApiState, org: &str) -> ApiResult<()> {
    if org.is_empty() || state.store.org(org).await?.is_some() {
        return Ok(());
    }
    let orgs = state.store.orgs().await?;
    if orgs.is_empty() {
        return Ok(());
    }
    let mut known: Vec<&str> = orgs.iter().map(|o| o.id.as_str()).take(5).collect();
    if orgs.len() > known.len() {
        known.push("…");
    }
    Err(ApiError::unprocessable(format!(
        "org: '{org}' is not in the organisation tree (it has {}); pick one of them, or create \
         '{org}' first (POST /api/v1/orgs)",
        known.join(", ")
    )))
}

async fn org_or_404(state: &ApiState, id: &str) -> ApiResult<OrgRow> {
    state
        .store
        .org(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("organisation '{id}' not found")))
}

/// The organisations (each checked with `org.read`), or those directly below one.
#[utoipa::path(get, path = "/api/v1/orgs", tag = "organisations", security(("bearer" = [])),
    params(OrgQuery),
    responses((status = 200, body = OrgList), (status = 403, body = crate::problem::Problem)))]
pub async fn list(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<OrgQuery>,
) -> ApiResult<Json<OrgList>> {
    crate::authz::check(
        &state,
        &user,
        "org.read",
        serde_json::json!({"kind": "org", "id": "*"}),
    )?;
    let parent = q.parent.map(|p| p.trim().to_string());
    let rows = state.store.orgs().await?;
    Ok(Json(OrgList {
        items: rows
            .into_iter()
            .filter(|o| match &parent {
                None => true,
                Some(p) if p.is_empty() => o.parent.is_none(),
                Some(p) => o.parent.as_deref() == Some(p.as_str()),
            })
            .filter(|o| {
                crate::authz::allows(
                    &state,
                    &user,
                    "org.read",
                    resource(&o.id, o.region.as_deref()),
                )
            })
            .map(Org::from)
            .collect(),
    }))
}

/// An organisation.
#[utoipa::path(get, path = "/api/v1/orgs/{id}", tag = "organisations", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Org), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem)))]
pub async fn get_one(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Org>> {
    let row = org_or_404(&state, &id).await?;
    crate::authz::check(
        &state,
        &user,
        "org.read",
        resource(&row.id, row.region.as_deref()),
    )?;
    Ok(Json(row.into()))
}

/// Add an organisation, at the top or below an existing one.
#[utoipa::path(post, path = "/api/v1/orgs", tag = "organisations", security(("bearer" = [])),
    request_body = CreateOrg,
    responses((status = 201, body = Org), (status = 403, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<CreateOrg>,
) -> ApiResult<(StatusCode, Json<Org>)> {
    let id = org_id(&req.id)?;
    let region = region(&state, req.region).await?;
    crate::authz::check(&state, &user, "org.write", resource(&id, region.as_deref()))?;
    let name = crate::regions::name(&req.name)?;
    let contact = contact(req.contact)?;
    let parent = req
        .parent
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty());
    if let Some(p) = &parent
        && state.store.org(p).await?.is_none()
    {
        return Err(ApiError::unprocessable(format!(
            "parent: organisation '{p}' does not exist: create it first, or leave parent out \
             for a top-level organisation"
        )));
    }
    let row = state
        .store
        .create_org(&OrgRow {
            id: id.clone(),
            parent,
            name,
            region,
            contact,
            created_at: 0,
            updated_at: 0,
        })
        .await?;
    tracing::info!(org = %id, by = %user.user.username, "organisation created");
    crate::audit::record(
        &state,
        &user.user.username,
        "org.create",
        &format!("org:{id}"),
        "ok",
        serde_json::json!({"name": row.name, "parent": row.parent, "region": row.region}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Change an organisation's name, region or contact (its id, which scopes hold, and its place
/// in the tree stay).
#[utoipa::path(patch, path = "/api/v1/orgs/{id}", tag = "organisations", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = UpdateOrg,
    responses((status = 200, body = Org), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn update(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
    Json(req): Json<UpdateOrg>,
) -> ApiResult<Json<Org>> {
    let current = org_or_404(&state, &id).await?;
    crate::authz::check(
        &state,
        &user,
        "org.write",
        resource(&id, current.region.as_deref()),
    )?;
    let new_region = match req.region {
        Some(r) => Some(region(&state, Some(r)).await?),
        None => None,
    };
    if let Some(Some(r)) = &new_region {
        // Moving it needs the right to write where it goes as well as where it is.
        crate::authz::check(&state, &user, "org.write", resource(&id, Some(r)))?;
    }
    let new_name = req.name.as_deref().map(crate::regions::name).transpose()?;
    let new_contact = match req.contact {
        Some(c) => Some(contact(Some(c))?),
        None => None,
    };
    let row = state
        .store
        .update_org(
            &id,
            new_name.as_deref(),
            new_region.as_ref().map(Option::as_deref),
            new_contact.as_ref().map(Option::as_deref),
        )
        .await?;
    crate::audit::record(
        &state,
        &user.user.username,
        "org.update",
        &format!("org:{id}"),
        "ok",
        serde_json::json!({"name": row.name, "region": row.region, "contact": row.contact}),
    )
    .await;
    Ok(Json(row.into()))
}

/// Delete an organisation nothing belongs to: no organisations below it, no users and no
/// products (409 says what is left).
#[utoipa::path(delete, path = "/api/v1/orgs/{id}", tag = "organisations", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn delete(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let current = org_or_404(&state, &id).await?;
    crate::authz::check(
        &state,
        &user,
        "org.delete",
        resource(&id, current.region.as_deref()),
    )?;
    let occupancy = state.store.org_occupancy(&id).await?;
    if !occupancy.is_empty() {
        return Err(ApiError::conflict(format!(
            "organisation '{id}' is still in use: {} belong to it; delete the \
             sub-organisations and move the users and products to another organisation first",
            crate::regions::describe(&occupancy, "sub-organisation(s)")
        )));
    }
    state.store.delete_org(&id).await?;
    tracing::info!(org = %id, by = %user.user.username, "organisation deleted");
    crate::audit::record(
        &state,
        &user.user.username,
        "org.delete",
        &format!("org:{id}"),
        "ok",
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of the organisation tree.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/orgs", get(list).post(create))
        .route(
            "/api/v1/orgs/{id}",
            get(get_one).patch(update).delete(delete),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(list, get_one, create, update, delete),
    tags((name = "organisations", description = "The organisation tree users and products belong to"))
)]
pub struct OrgsDoc;
