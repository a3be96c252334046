//! Operator log-in: Argon2id password hashes and opaque bearer tokens (stored only as SHA-256).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine;
use lotus_storage::UserRow;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::ApiState;
use crate::problem::{ApiError, ApiResult, Json};

pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with default parameters succeeds")
        .to_string()
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

fn token_hash(token: &str) -> String {
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
    let Some(user) = user.filter(|_| ok) else {
        tracing::warn!(username = %req.username, "failed log-in");
        return Err(ApiError::unauthorized("wrong username or password"));
    };
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let expires_at = lotus_device::now_ms() + state.session_ttl_ms;
    state
        .store
        .create_session(&token_hash(&token), user.id, expires_at)
        .await?;
    tracing::info!(username = %user.username, "log-in");
    Ok(Json(LoginResponse {
        token,
        expires_at,
        username: user.username,
        roles: user.roles,
    }))
}

/// End the current session.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204)))]
pub async fn logout(State(state): State<ApiState>, user: Authenticated) -> ApiResult<StatusCode> {
    state.store.delete_session(&user.token_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller, from `Authorization: Bearer <token>`.
pub struct Authenticated {
    pub user: UserRow,
    token_hash: String,
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
            .await?
            .ok_or_else(|| {
                ApiError::unauthorized("the token is unknown or expired: log in again")
            })?;
        Ok(Authenticated { user, token_hash })
    }

    /// The stored hash of the session this request came with.
    pub(crate) fn session(&self) -> &str {
        &self.token_hash
    }
}

impl FromRequestParts<ApiState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
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
