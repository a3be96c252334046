//! Operator accounts: who may log in, with which roles, in which organisation and region. What
//! a role may do is the `lotus.api` policy's to say; this module only keeps the accounts.

use axum::extract::State;
use axum::http::StatusCode;
use lotus_model::scope::{Scope, parse_org, parse_region};
use lotus_storage::{Disabling, UserFilter, UserProfile, UserRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Query};

const MIN_PASSWORD: usize = 10;
/// Hashing is the slow part of a log-in; nobody needs a longer password than this.
const MAX_PASSWORD: usize = 1024;
const MAX_DISPLAY_NAME: usize = 64;
/// RFC 5321's limit on a forward path.
const MAX_EMAIL: usize = 254;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    /// At least 10 characters mixing two of letters, digits and other characters, without
    /// the username; stored as an Argon2id hash.
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
    /// The name the portal shows; none when absent or empty.
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    #[schema(example = "ops@example.org")]
    pub email: Option<String>,
    /// `+` and 6 to 20 digits.
    #[serde(default)]
    #[schema(example = "+8613812345678")]
    pub phone: Option<String>,
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
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub created_at: i64,
    /// Disabled by an administrator: the account cannot log in and has no session.
    pub disabled: bool,
    /// When it was disabled; absent while it is active.
    pub disabled_at: Option<i64>,
    /// Until when failed log-ins lock it; absent when it is not locked now.
    pub locked_until: Option<i64>,
    /// An administrator set the password; the user is asked to choose their own at log-in.
    pub must_change_password: bool,
}

impl From<UserRow> for User {
    fn from(u: UserRow) -> Self {
        let now = lotus_device::now_ms();
        User {
            id: u.id,
            username: u.username,
            roles: u.roles,
            org: u.scope.org,
            region: u.scope.region,
            display_name: u.profile.display_name,
            email: u.profile.email,
            phone: u.profile.phone,
            created_at: u.created_at,
            disabled: u.disabled_at.is_some(),
            disabled_at: u.disabled_at,
            locked_until: u.locked_until.filter(|t| *t > now),
            must_change_password: u.password_reset_at.is_some(),
        }
    }
}

/// A display name as given: surrounding spaces dropped, empty meaning none.
pub(crate) fn display_name(value: Option<String>) -> ApiResult<Option<String>> {
    let Some(v) = given(value) else {
        return Ok(None);
    };
    if v.chars().count() > MAX_DISPLAY_NAME || v.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(format!(
            "displayName: at most {MAX_DISPLAY_NAME} characters, without control characters"
        )));
    }
    Ok(Some(v))
}

/// An e-mail address of the usual shape (`name@host.domain`); empty meaning none. Whether it
/// reaches anyone only a message can tell.
pub(crate) fn email(value: Option<String>) -> ApiResult<Option<String>> {
    let Some(v) = given(value) else {
        return Ok(None);
    };
    let shaped = v.len() <= MAX_EMAIL
        && v.split_once('@').is_some_and(|(local, domain)| {
            let labels: Vec<&str> = domain.split('.').collect();
            !local.is_empty()
                && local.len() <= 64
                && !local
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '@')
                && labels.len() >= 2
                && labels.iter().all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.chars().all(|c| c.is_alphanumeric() || c == '-')
                })
        });
    if !shaped {
        return Err(ApiError::unprocessable(
            "email: an address like name@example.org",
        ));
    }
    Ok(Some(v))
}

/// A phone number in international form: `+` and 6 to 20 digits; empty meaning none.
pub(crate) fn phone(value: Option<String>) -> ApiResult<Option<String>> {
    let Some(v) = given(value) else {
        return Ok(None);
    };
    let digits = v.strip_prefix('+').unwrap_or_default();
    if !(6..=20).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(ApiError::unprocessable(
            "phone: '+' and 6 to 20 digits, e.g. +8613812345678",
        ));
    }
    Ok(Some(v))
}

fn given(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The password rule, for new accounts and changed passwords alike; the problem says which
/// part a password breaks.
pub(crate) fn check_password(username: &str, password: &str) -> ApiResult<()> {
    let length = password.chars().count();
    if length < MIN_PASSWORD {
        return Err(ApiError::unprocessable(format!(
            "password: at least {MIN_PASSWORD} characters"
        )));
    }
    if length > MAX_PASSWORD {
        return Err(ApiError::unprocessable(format!(
            "password: at most {MAX_PASSWORD} characters"
        )));
    }
    let kinds = [
        password.chars().any(char::is_alphabetic),
        password.chars().any(|c| c.is_numeric()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ];
    if kinds.iter().filter(|k| **k).count() < 2 {
        return Err(ApiError::unprocessable(
            "password: mix at least two of letters, digits and other characters",
        ));
    }
    if !username.is_empty() && password.to_lowercase().contains(&username.to_lowercase()) {
        return Err(ApiError::unprocessable(
            "password: must not contain the username",
        ));
    }
    Ok(())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// 1-based (default 1).
    pub page: Option<i64>,
    /// At most 500 (default 100).
    pub page_size: Option<i64>,
    /// Users whose name, display name, organisation, region or roles contain this.
    pub q: Option<String>,
    /// Only disabled (`true`) or only active (`false`) accounts.
    pub disabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetRoles {
    /// Every role the user is to hold, built in or custom; replaces the ones held now.
    #[schema(example = json!(["operator"]))]
    pub roles: Vec<String>,
}

/// The shape every role name has (built-in and custom alike).
fn check_role_names(roles: &[String]) -> ApiResult<()> {
    if roles.is_empty()
        || roles
            .iter()
            .any(|r| r.is_empty() || !r.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    {
        return Err(ApiError::unprocessable(
            "roles: at least one, each in lower case letters and '_' (e.g. operator)",
        ));
    }
    Ok(())
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
    // The roles it would hold go to the policy too: separation of duties is decided there.
    let mut resource = crate::authz::resource("user", &req.username, Some(&scope));
    resource["roles"] = serde_json::json!(req.roles);
    crate::authz::check(&state, &user, "user.write", resource)?;
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
    check_password(name, &req.password)?;
    check_role_names(&req.roles)?;
    crate::roles::require_known(&state, &req.roles).await?;
    crate::regions::require_known(&state, &scope.region).await?;
    crate::orgs::require_known(&state, &scope.org).await?;
    let profile = UserProfile {
        display_name: display_name(req.display_name)?,
        email: email(req.email)?,
        phone: phone(req.phone)?,
    };
    let password = req.password;
    let hash = crate::auth::hash_password_blocking(password).await?;
    let row = state
        .store
        .create_user_with_profile(name, &hash, &req.roles, &scope, &profile)
        .await?;
    tracing::info!(user = %row.username, roles = ?row.roles, org = %scope.org, region = %scope.region,
        by = %user.user.username, "user created");
    crate::audit::record(
        &state,
        &user.user.username,
        "user.create",
        &format!("user:{}", row.username),
        "ok",
        serde_json::json!({"roles": row.roles, "org": scope.org, "region": scope.region}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Operator accounts (never their passwords), by name, a page at a time.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    params(UserQuery),
    responses((status = 200, body = crate::products::Paged<User>), (status = 400, body = crate::problem::Problem)))]
pub async fn list(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<UserQuery>,
) -> ApiResult<Json<crate::products::Paged<User>>> {
    crate::authz::global(&state, &user, "user", "read", "*")?;
    let (page, number, size) = crate::products::PageQuery {
        page: q.page,
        // A city has hundreds of operators: one page shows a department.
        page_size: q.page_size.or(Some(100)),
    }
    .page()?;
    let within = crate::authz::list_scope(&state, &user, "user")?;
    let (rows, total) = state
        .store
        .list_users_matching(
            page,
            &UserFilter {
                within: within.as_ref(),
                search: q.q.as_deref(),
                disabled: q.disabled,
            },
        )
        .await?;
    Ok(Json(crate::products::Paged {
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
        total,
        page: number,
        page_size: size,
    }))
}

/// Replace the roles a user holds (built in or custom). Separation of duties is the policy's
/// to check: one account never holds two of the system, security and audit administrators'
/// roles.
#[utoipa::path(put, path = "/api/v1/users/{username}/roles", tag = "users", security(("bearer" = [])),
    params(("username" = String, Path)), request_body = SetRoles,
    responses((status = 200, body = User), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn set_roles(
    State(state): State<ApiState>,
    user: Authenticated,
    axum::extract::Path(username): axum::extract::Path<String>,
    Json(req): Json<SetRoles>,
) -> ApiResult<Json<User>> {
    let target = user_or_404(&state, &username).await?;
    let mut resource = crate::authz::resource("user", &username, Some(&target.scope));
    resource["roles"] = serde_json::json!(req.roles);
    crate::authz::check(&state, &user, "user.write", resource)?;
    let mut roles: Vec<String> = req.roles.iter().map(|r| r.trim().to_string()).collect();
    roles.sort();
    roles.dedup();
    check_role_names(&roles)?;
    crate::roles::require_known(&state, &roles).await?;
    state.store.set_user_roles(&username, &roles).await?;
    tracing::info!(username = %username, from = ?target.roles, to = ?roles, by = %user.user.username,
        "roles changed");
    crate::audit::record(
        &state,
        &user.user.username,
        "user.roles",
        &format!("user:{username}"),
        "ok",
        serde_json::json!({"from": target.roles, "to": roles}),
    )
    .await;
    let mut row = target;
    row.roles = roles;
    Ok(Json(row.into()))
}

/// Unlock an account that repeated failed log-ins locked: its failure count starts over.
#[utoipa::path(post, path = "/api/v1/users/{username}/unlock", tag = "users", security(("bearer" = [])),
    params(("username" = String, Path)),
    responses((status = 204), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem)))]
pub async fn unlock(
    State(state): State<ApiState>,
    user: Authenticated,
    axum::extract::Path(username): axum::extract::Path<String>,
) -> ApiResult<StatusCode> {
    let target = user_or_404(&state, &username).await?;
    crate::authz::check(
        &state,
        &user,
        "user.write",
        crate::authz::resource("user", &username, Some(&target.scope)),
    )?;
    state.store.clear_failed_logins(&username).await?;
    tracing::info!(username = %username, by = %user.user.username, "account unlocked");
    crate::audit::record(
        &state,
        &user.user.username,
        "user.unlock",
        &format!("user:{username}"),
        "ok",
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The user `username`, or 404.
async fn user_or_404(state: &ApiState, username: &str) -> ApiResult<UserRow> {
    state
        .store
        .user_by_name(username)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user '{username}' not found")))
}

/// One operator account (never its password).
#[utoipa::path(get, path = "/api/v1/users/{username}", tag = "users", security(("bearer" = [])),
    params(("username" = String, Path)),
    responses((status = 200, body = User), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem)))]
pub async fn get(
    State(state): State<ApiState>,
    user: Authenticated,
    axum::extract::Path(username): axum::extract::Path<String>,
) -> ApiResult<Json<User>> {
    // Asked as for the list first, so that who may not read users at all does not learn which
    // names exist from 404s.
    crate::authz::global(&state, &user, "user", "read", "*")?;
    let target = user_or_404(&state, &username).await?;
    crate::authz::check(
        &state,
        &user,
        "user.read",
        crate::authz::resource("user", &username, Some(&target.scope)),
    )?;
    Ok(Json(target.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUser {
    /// Move the user to this organisation; `""` for none.
    pub org: Option<String>,
    /// Move the user to this region; `/` is the whole city.
    #[schema(example = "/hz/binjiang")]
    pub region: Option<String>,
    /// `""` removes it.
    pub display_name: Option<String>,
    /// `""` removes it.
    #[schema(example = "ops@example.org")]
    pub email: Option<String>,
    /// `+` and 6 to 20 digits; `""` removes it.
    #[schema(example = "+8613812345678")]
    pub phone: Option<String>,
    /// `true` disables the account at once (its sessions end, log-ins are refused); `false`
    /// enables it again.
    pub disabled: Option<bool>,
}

/// Change a user's organisation, region, name or contact details, or disable or enable the
/// account. Fields left out stay as they are. Moving a user needs `user.write` both where
/// they are and where they go. Disabling ends the user's sessions at once and refuses their
/// log-ins until an administrator enables the account again; nobody disables their own
/// account, and the last active administrator is never disabled.
#[utoipa::path(patch, path = "/api/v1/users/{username}", tag = "users", security(("bearer" = [])),
    params(("username" = String, Path)), request_body = UpdateUser,
    responses((status = 200, body = User), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem, description = "disabling yourself or the last active administrator"),
        (status = 422, body = crate::problem::Problem)))]
pub async fn update(
    State(state): State<ApiState>,
    user: Authenticated,
    axum::extract::Path(username): axum::extract::Path<String>,
    Json(req): Json<UpdateUser>,
) -> ApiResult<Json<User>> {
    let target = user_or_404(&state, &username).await?;
    let mut resource = crate::authz::resource("user", &username, Some(&target.scope));
    resource["roles"] = serde_json::json!(target.roles);
    crate::authz::check(&state, &user, "user.write", resource)?;

    let scope = Scope {
        org: match &req.org {
            Some(org) => {
                parse_org(org).map_err(|e| ApiError::unprocessable(format!("org: {e}")))?
            }
            None => target.scope.org.clone(),
        },
        region: match &req.region {
            Some(region) => {
                parse_region(region).map_err(|e| ApiError::unprocessable(format!("region: {e}")))?
            }
            None => target.scope.region.clone(),
        },
    };
    let moved = scope != target.scope;
    if moved {
        // Whoever moves a user must be allowed where the user lands, not only where they were.
        let mut resource = crate::authz::resource("user", &username, Some(&scope));
        resource["roles"] = serde_json::json!(target.roles);
        crate::authz::check(&state, &user, "user.write", resource)?;
        if scope.region != target.scope.region {
            crate::regions::require_known(&state, &scope.region).await?;
        }
        if scope.org != target.scope.org {
            crate::orgs::require_known(&state, &scope.org).await?;
        }
    }
    let keep = |given: Option<String>, now: &Option<String>| match given {
        Some(v) => Some(v),
        None => now.clone(),
    };
    let profile = UserProfile {
        display_name: display_name(keep(req.display_name, &target.profile.display_name))?,
        email: email(keep(req.email, &target.profile.email))?,
        phone: phone(keep(req.phone, &target.profile.phone))?,
    };
    if req.disabled == Some(true) && username == user.user.username {
        return Err(ApiError::conflict(
            "you cannot disable your own account: ask another administrator",
        ));
    }

    let actor = &user.user.username;
    let subject = format!("user:{username}");
    let mut row = target.clone();
    // Disabling goes first: it is the change that may be refused, and then nothing changed.
    match req.disabled {
        Some(true) => match state
            .store
            .disable_user(target.id, lotus_device::now_ms())
            .await?
        {
            Disabling::Disabled(at) => {
                row.disabled_at = Some(at);
                tracing::warn!(username = %username, by = %actor, "account disabled; its sessions ended");
                crate::audit::record(
                    &state,
                    actor,
                    "user.disable",
                    &subject,
                    "ok",
                    serde_json::json!({}),
                )
                .await;
            }
            Disabling::AlreadyDisabled(at) => row.disabled_at = Some(at),
            Disabling::LastAdmin => {
                return Err(ApiError::conflict(format!(
                    "'{username}' is the last active administrator: enable or create another \
                     administrator first, or nobody could administer this node"
                )));
            }
        },
        Some(false) => {
            if state.store.enable_user(target.id).await? {
                tracing::info!(username = %username, by = %actor, "account enabled");
                crate::audit::record(
                    &state,
                    actor,
                    "user.enable",
                    &subject,
                    "ok",
                    serde_json::json!({}),
                )
                .await;
            }
            row.disabled_at = None;
        }
        None => {}
    }

    let (mut from, mut to) = (serde_json::Map::new(), serde_json::Map::new());
    let mut changed = |field: &str, before: serde_json::Value, after: serde_json::Value| {
        if before != after {
            from.insert(field.into(), before);
            to.insert(field.into(), after);
        }
    };
    changed(
        "org",
        target.scope.org.clone().into(),
        scope.org.clone().into(),
    );
    changed(
        "region",
        target.scope.region.clone().into(),
        scope.region.clone().into(),
    );
    changed(
        "displayName",
        target.profile.display_name.clone().into(),
        profile.display_name.clone().into(),
    );
    changed(
        "email",
        target.profile.email.clone().into(),
        profile.email.clone().into(),
    );
    changed(
        "phone",
        target.profile.phone.clone().into(),
        profile.phone.clone().into(),
    );
    if !to.is_empty() {
        state
            .store
            .update_user_account(target.id, &scope, &profile)
            .await?;
        tracing::info!(username = %username, fields = ?to.keys().collect::<Vec<_>>(), by = %actor,
            "user changed");
        crate::audit::record(
            &state,
            actor,
            "user.update",
            &subject,
            "ok",
            serde_json::json!({"from": from, "to": to}),
        )
        .await;
        row.scope = scope;
        row.profile = profile;
    }
    Ok(Json(row.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    /// The new password, by the same rule as a new account's. The user is asked to replace it
    /// with their own at the next log-in.
    pub password: String,
}

/// Set a user's password (they forgot theirs). Every session of the user ends and a lock from
/// failed log-ins is lifted. For your own password use `POST /api/v1/me/password`, which asks
/// for the current one.
#[utoipa::path(post, path = "/api/v1/users/{username}/password", tag = "users", security(("bearer" = [])),
    params(("username" = String, Path)), request_body = ResetPassword,
    responses((status = 204), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem, description = "your own account"),
        (status = 422, body = crate::problem::Problem, description = "the password breaks the rule the problem states")))]
pub async fn reset_password(
    State(state): State<ApiState>,
    user: Authenticated,
    axum::extract::Path(username): axum::extract::Path<String>,
    Json(req): Json<ResetPassword>,
) -> ApiResult<StatusCode> {
    let target = user_or_404(&state, &username).await?;
    let mut resource = crate::authz::resource("user", &username, Some(&target.scope));
    resource["roles"] = serde_json::json!(target.roles);
    crate::authz::check(&state, &user, "user.write", resource)?;
    if username == user.user.username {
        // Changing one's own password proves the current one first.
        return Err(ApiError::conflict(
            "this is your own account: change your password with POST /api/v1/me/password (the \
             personal center), which asks for the current one",
        ));
    }
    check_password(&username, &req.password)?;
    let password = req.password;
    let hash = crate::auth::hash_password_blocking(password).await?;
    let ended = state
        .store
        .reset_user_password(target.id, &hash, lotus_device::now_ms())
        .await?;
    tracing::warn!(username = %username, by = %user.user.username, sessions_ended = ended,
        "password reset by an administrator");
    crate::audit::record(
        &state,
        &user.user.username,
        "user.password_reset",
        &format!("user:{username}"),
        "ok",
        serde_json::json!({"sessionsEnded": ended}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
