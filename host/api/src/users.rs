//! Operator accounts: who may log in, with which roles, in which organisation and region. What
//! a role may do is the `lotus.api` policy's to say; this module only keeps the accounts.

use axum::extract::State;
use axum::http::StatusCode;
use lotus_model::scope::{Scope, parse_org, parse_region};
use lotus_storage::UserRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json};

const MIN_PASSWORD: usize = 10;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    /// At least 10 characters; stored as an argon2 hash.
    pub password: String,
    /// e.g. `operator`, `viewer`, `admin`, `security_admin`, `auditor`.
    pub roles: Vec<String>,
    /// The organisation the user acts for; none when empty.
    #[serde(default)]
    pub org: String,
    /// The region the user is responsible for; `/` is the whole city.
    #[serde(default = "whole_city")]
    #[schema(example = "/hz/xihu")]
    pub region: String,
}

fn whole_city() -> String {
    "/".into()
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: i64,
    pub username: String,
    pub roles: Vec<String>,
    pub org: String,
    pub region: String,
    pub created_at: i64,
}

impl From<UserRow> for User {
    fn from(u: UserRow) -> Self {
        User {
            id: u.id,
            username: u.username,
            roles: u.roles,
            org: u.scope.org,
            region: u.scope.region,
            created_at: u.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub items: Vec<User>,
}

/// Create an operator account.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    request_body = CreateUser,
    responses((status = 201, body = User), (status = 409, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn create(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let scope = Scope {
        org: parse_org(&req.org).map_err(|e| ApiError::unprocessable(format!("org: {e}")))?,
        region: parse_region(&req.region)
            .map_err(|e| ApiError::unprocessable(format!("region: {e}")))?,
    };
    crate::authz::check(
        &state,
        &user,
        "user.write",
        crate::authz::resource("user", &req.username, Some(&scope)),
    )?;
    let name = req.username.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(ApiError::unprocessable(
            "username: 1 to 64 letters, digits, '-', '_', '.' and '@'",
        ));
    }
    if req.password.chars().count() < MIN_PASSWORD {
        return Err(ApiError::unprocessable(format!(
            "password: at least {MIN_PASSWORD} characters"
        )));
    }
    if req.roles.is_empty()
        || req
            .roles
            .iter()
            .any(|r| r.is_empty() || !r.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    {
        return Err(ApiError::unprocessable(
            "roles: at least one, each in lower case letters and '_' (e.g. operator)",
        ));
    }
    let hash = crate::auth::hash_password(&req.password);
    let row = state
        .store
        .create_user(name, &hash, &req.roles, &scope)
        .await?;
    tracing::info!(user = %row.username, roles = ?row.roles, org = %scope.org, region = %scope.region,
        by = %user.user.username, "user created");
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Operator accounts (never their passwords), by name.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserList)))]
pub async fn list(State(state): State<ApiState>, user: Authenticated) -> ApiResult<Json<UserList>> {
    crate::authz::global(&state, &user, "user", "read", "*")?;
    let rows = state.store.list_users().await?;
    Ok(Json(UserList {
        items: rows
            .into_iter()
            .filter(|u| {
                crate::authz::allows(
                    &state,
                    &user,
                    "user.read",
                    crate::authz::resource("user", &u.username, Some(&u.scope)),
                )
            })
            .map(User::from)
            .collect(),
    }))
}
