//! Operator log-in: Argon2id password hashes and opaque bearer tokens (stored only as SHA-256).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine;
use lotus_storage::{AppRow, UserRow};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::ApiState;
use crate::problem::{ApiError, ApiResult, Json};
use crate::signature::VerifiedApp;

pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with default parameters succeeds")
        .to_string()
}

/// [`hash_password`] on a blocking thread: Argon2id takes tens of milliseconds of CPU, which
/// must not stall the async workers serving other requests.
pub(crate) async fn hash_password_blocking(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("hashing the password failed: {e}"),
            )
        })
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Unix milliseconds.
    pub expires_at: i64,
    pub username: String,
    pub roles: Vec<String>,
    /// An administrator set this password: choose your own now (`POST /api/v1/me/password`).
    pub must_change_password: bool,
}

/// Log in with a username and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = crate::problem::Problem)))]
pub async fn login(
    State(state): State<ApiState>,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let user = state.store.user_by_name(&req.username).await?;
    // Verify against a dummy hash for unknown users so timing does not reveal which names exist.
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| state.dummy_hash.to_string());
    let password = req.password.clone();
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let now = lotus_device::now_ms();
    if let Some(u) = &user
        && let Some(until) = state.store.login_locked_until(u.id, now).await?
    {
        tracing::warn!(username = %u.username, "log-in to a locked account refused");
        crate::audit::record(
            &state,
            &u.username,
            "auth.login",
            &format!("user:{}", u.username),
            "denied",
            serde_json::json!({"reason": "locked", "lockedUntil": until}),
        )
        .await;
        return Err(locked(&state.lockout, until, now));
    }
    let known_id = user.as_ref().map(|u| u.id);
    let Some(user) = user.filter(|_| ok) else {
        tracing::warn!(username = %req.username, "failed log-in");
        if let Some(id) = known_id
            && state.lockout.max_failures > 0
            && let Some(until) = state
                .store
                .record_failed_login(
                    id,
                    now,
                    state.lockout.max_failures,
                    state.lockout.duration_ms,
                )
                .await?
        {
            tracing::warn!(username = %req.username, until, "account locked after repeated failed log-ins");
            crate::audit::record(
                &state,
                &req.username,
                "auth.lockout",
                &format!("user:{}", req.username),
                "denied",
                serde_json::json!({"lockedUntil": until}),
            )
            .await;
            return Err(locked(&state.lockout, until, now));
        }
        if known_id.is_some() {
            crate::audit::record(
                &state,
                &req.username,
                "auth.login",
                &format!("user:{}", req.username),
                "failed",
                serde_json::json!({"reason": "wrong password"}),
            )
            .await;
        }
        return Err(ApiError::unauthorized("wrong username or password"));
    };
    // Only now, with the right password: said earlier, it would tell anyone which names exist.
    if !user.is_active() {
        tracing::warn!(username = %user.username, "log-in to a disabled account refused");
        crate::audit::record(
            &state,
            &user.username,
            "auth.login",
            &format!("user:{}", user.username),
            "denied",
            serde_json::json!({"reason": "disabled"}),
        )
        .await;
        return Err(disabled());
    }
    state.store.clear_failed_logins(&user.username).await?;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let expires_at = lotus_device::now_ms() + state.session_ttl_ms;
    state
        .store
        .create_session(&token_hash(&token), user.id, expires_at)
        .await?;
    tracing::info!(username = %user.username, "log-in");
    crate::audit::record(
        &state,
        &user.username,
        "auth.login",
        &format!("user:{}", user.username),
        "ok",
        serde_json::json!({}),
    )
    .await;
    Ok(Json(LoginResponse {
        token,
        expires_at,
        username: user.username,
        roles: user.roles,
        must_change_password: user.password_reset_at.is_some(),
    }))
}

/// 403 for a log-in to a disabled account (given only once the password checked out).
pub(crate) fn disabled() -> ApiError {
    ApiError::forbidden(
        "this account is disabled: ask an administrator to enable it if you still need it",
    )
}

/// When repeated failed log-ins lock an account (MLPS level 3 asks for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Failed log-ins in a row that lock it; 0 never locks.
    pub max_failures: i64,
    pub duration_ms: i64,
}

impl Default for Lockout {
    fn default() -> Self {
        Lockout {
            max_failures: 5,
            duration_ms: 15 * 60 * 1000,
        }
    }
}

/// 403 for a locked account: says for how long and what to do (the same whatever the
/// password, so the lock reveals nothing about it).
pub(crate) fn locked(lockout: &Lockout, until: i64, now: i64) -> ApiError {
    let minutes = ((until - now) as f64 / 60_000.0).ceil().max(1.0) as i64;
    ApiError::forbidden(format!(
        "this account is locked for {minutes} more minute(s) after {} failed log-ins in a row: \
         try again later, or ask an administrator to unlock it",
        lockout.max_failures
    ))
}

/// End the current session.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204)))]
pub async fn logout(State(state): State<ApiState>, user: Authenticated) -> ApiResult<StatusCode> {
    if user.app().is_some() {
        return Err(ApiError::forbidden(
            "apps have no session to end: they sign each request",
        ));
    }
    state.store.delete_session(user.session()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller: a user, from `Authorization: Bearer <token>`, or a registered app, from a
/// request signed with its secret (`crate::signature`).
pub struct Authenticated {
    /// Who acts. For an app, the identity it acts under: username `app:<client_id>`, no roles,
    /// its organisation and region, id 0 (no user has it), so that logs and audit entries name
    /// the app. What only a person has (profile, tasks, messages) is refused to apps before
    /// this is used; [`Authenticated::person`] says which one it is.
    pub user: UserRow,
    caller: Caller,
}

/// Who is calling.
pub enum Caller {
    /// A logged-in user, with the stored hash of their session token.
    User { token_hash: String },
    /// An app whose signature checked out.
    App(Box<AppRow>),
}

impl Authenticated {
    /// The caller of a session token, wherever the request carried it.
    pub(crate) async fn from_token(state: &ApiState, token: &str) -> ApiResult<Self> {
        Self::from_session(state, token_hash(token.trim())).await
    }

    /// The caller of a session, by the stored hash of its token; 401 once it has ended.
    pub(crate) async fn from_session(state: &ApiState, token_hash: String) -> ApiResult<Self> {
        let user = state
            .store
            .session_user(&token_hash, lotus_device::now_ms())
            .await?;
        let Some(user) = user else {
            if state
                .store
                .session_of_disabled_user(&token_hash, lotus_device::now_ms())
                .await?
            {
                return Err(ApiError::unauthorized(
                    "this account is disabled: its sessions have ended; ask an administrator",
                ));
            }
            return Err(ApiError::unauthorized(
                "the token is unknown or expired: log in again",
            ));
        };
        Ok(Authenticated {
            user,
            caller: Caller::User { token_hash },
        })
    }

    /// A verified app, acting under its own name and scope.
    pub(crate) fn from_app(app: AppRow) -> Self {
        let user = UserRow {
            id: 0,
            username: format!("app:{}", app.client_id),
            // No hash verifies against an empty string, so this identity can never log in.
            password_hash: String::new(),
            roles: Vec::new(),
            created_at: app.created_at,
            scope: app.scope.clone(),
            profile: lotus_storage::UserProfile {
                display_name: Some(app.name.clone()),
                ..Default::default()
            },
            // An app's API actions are its own grants, passed to the policy as `apis`.
            permissions: Vec::new(),
            // Filled in by the extractor, which can ask the store.
            org_subtree: Vec::new(),
            disabled_at: None,
            locked_until: None,
            password_reset_at: None,
        };
        Authenticated {
            user,
            caller: Caller::App(Box::new(app)),
        }
    }

    /// Who is calling.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The app, when an app is calling.
    pub fn app(&self) -> Option<&AppRow> {
        match &self.caller {
            Caller::App(app) => Some(app),
            Caller::User { .. } => None,
        }
    }

    /// The logged-in user, when a person is calling.
    pub fn person(&self) -> Option<&UserRow> {
        match &self.caller {
            Caller::User { .. } => Some(&self.user),
            Caller::App(_) => None,
        }
    }

    /// The stored hash of the session this request came with (empty for an app, which has
    /// no session).
    pub(crate) fn session(&self) -> &str {
        match &self.caller {
            Caller::User { token_hash } => token_hash,
            Caller::App(_) => "",
        }
    }
}

impl FromRequestParts<ApiState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(VerifiedApp(app)) = parts.extensions.remove::<VerifiedApp>() {
            let mut caller = Authenticated::from_app(app);
            caller.user.org_subtree = state.store.org_subtree(&caller.user.scope.org).await?;
            return Ok(caller);
        }
        if parts.headers.contains_key(crate::signature::APP_HEADER) {
            // The signature middleware does not run on this route (it would have left the app).
            return Err(ApiError::unauthorized(
                "this route does not accept signed app requests: it is for logged-in users",
            ));
        }
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "missing 'Authorization: Bearer <token>': log in at POST /api/v1/auth/login",
                )
            })?;
        let token = header.strip_prefix("Bearer ").ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be 'Bearer <token>'")
        })?;
        Authenticated::from_token(state, token).await
    }
}
