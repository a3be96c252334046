//! The personal center: the caller's own account. Every route acts on the session's user, never
//! on a name from the request, so nobody can read or change someone else's profile here; the
//! policy is still asked (`profile.read` / `profile.write` on the caller's own name), so a city
//! can take the right away from a role.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use lotus_storage::UserProfile;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json};
use crate::users::{check_password, display_name, email, phone};

/// Who you are.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub id: i64,
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Set by an administrator; read-only here.
    pub roles: Vec<String>,
    /// Set by an administrator; read-only here.
    pub region: String,
    /// Set by an administrator; read-only here (empty: no organisation).
    pub org: String,
    pub created_at: i64,
}

impl From<lotus_storage::UserRow> for Me {
    fn from(u: lotus_storage::UserRow) -> Self {
        Me {
            id: u.id,
            username: u.username,
            display_name: u.profile.display_name,
            email: u.profile.email,
            phone: u.profile.phone,
            roles: u.roles,
            region: u.scope.region,
            org: u.scope.org,
            created_at: u.created_at,
        }
    }
}

/// Changes to your profile: a field left out keeps its value, `null` or `""` clears it.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateMe {
    /// At most 64 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "ops@example.org")]
    pub email: Option<Option<String>>,
    /// `+` and 6 to 20 digits.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "+8613812345678")]
    pub phone: Option<Option<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`, by `default`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The password you log in with now.
    pub current: String,
    /// At least 10 characters mixing two of letters, digits and other characters, without
    /// your username.
    pub new: String,
}

fn own(state: &ApiState, user: &Authenticated, verb: &str) -> ApiResult<()> {
    crate::authz::global(state, user, "profile", verb, &user.user.username)
}

/// Your account: name, contact details, roles, organisation and region.
#[utoipa::path(get, path = "/api/v1/me", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = crate::problem::Problem)))]
pub async fn get_me(State(state): State<ApiState>, user: Authenticated) -> ApiResult<Json<Me>> {
    own(&state, &user, "read")?;
    Ok(Json(user.user.into()))
}

/// Change your display name, e-mail or phone.
#[utoipa::path(put, path = "/api/v1/me", tag = "me", security(("bearer" = [])),
    request_body = UpdateMe,
    responses((status = 200, body = Me), (status = 422, body = crate::problem::Problem)))]
pub async fn put_me(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<UpdateMe>,
) -> ApiResult<Json<Me>> {
    own(&state, &user, "write")?;
    let current = &user.user.profile;
    let profile = UserProfile {
        display_name: match req.display_name {
            Some(v) => display_name(v)?,
            None => current.display_name.clone(),
        },
        email: match req.email {
            Some(v) => email(v)?,
            None => current.email.clone(),
        },
        phone: match req.phone {
            Some(v) => phone(v)?,
            None => current.phone.clone(),
        },
    };
    state
        .store
        .update_user_profile(user.user.id, &profile)
        .await?;
    tracing::info!(user = %user.user.username, "profile changed");
    let mut me = user.user;
    me.profile = profile;
    Ok(Json(me.into()))
}

/// Change your password. Your other sessions end; this one stays logged in.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "me", security(("bearer" = [])),
    request_body = ChangePassword,
    responses((status = 204), (status = 403, body = crate::problem::Problem, description = "the current password is wrong"),
        (status = 422, body = crate::problem::Problem, description = "the new password breaks the rule the problem states")))]
pub async fn change_password(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<ChangePassword>,
) -> ApiResult<StatusCode> {
    own(&state, &user, "write")?;
    let (current, hash) = (req.current, user.user.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || crate::auth::verify_password(&current, &hash))
        .await
        .unwrap_or(false);
    if !ok {
        tracing::warn!(user = %user.user.username, "password change with a wrong current password");
        return Err(ApiError::forbidden(
            "the current password is wrong: nothing was changed",
        ));
    }
    check_password(&user.user.username, &req.new)?;
    let new = req.new;
    let hash = crate::auth::hash_password_blocking(new).await?;
    state
        .store
        .set_user_password(user.user.id, &hash, Some(user.session()))
        .await?;
    tracing::info!(user = %user.user.username, "password changed; other sessions ended");
    crate::audit::record(
        &state,
        &user.user.username,
        "user.password",
        &format!("user:{}", user.user.username),
        "ok",
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/me", get(get_me).put(put_me))
        .route("/api/v1/me/password", post(change_password))
}

#[derive(OpenApi)]
#[openapi(
    paths(get_me, put_me, change_password),
    tags((name = "me", description = "The personal center: your own profile and password"))
)]
pub(crate) struct MeDoc;
