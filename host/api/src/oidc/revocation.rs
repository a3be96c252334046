//! Token revocation (RFC 7009): an app tells the provider it no longer needs a token, e.g.
//! when its user logs out of it. Revoking a refresh token revokes its whole grant (every
//! access and refresh token of that sign-in); revoking an access token revokes that token.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lotus_storage::OidcGrant;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::provider::{TokenError, authenticate_client};
use crate::ApiState;

/// A revocation request (RFC 7009 §2.1), form-encoded.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RevokeRequest {
    /// The access or refresh token.
    pub token: Option<String>,
    /// `access_token` or `refresh_token`: where to look first (other values are ignored).
    pub token_type_hint: Option<String>,
    /// With `client_secret_post`.
    pub client_id: Option<String>,
    /// `client_secret_post`; otherwise use HTTP Basic.
    pub client_secret: Option<String>,
}

/// Revoke an access or refresh token the calling app holds. The answer is 200 whether or not
/// the token was known (RFC 7009 §2.2): a token of another app, or one already revoked, is
/// left as it is. Clients authenticate as at the token endpoint.
#[utoipa::path(post, path = "/oauth2/revoke", tag = "openid connect",
    request_body(content = RevokeRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "revoked, or not a token of this client"),
        (status = 400, description = "invalid_request", body = super::provider::OAuthError),
        (status = 401, description = "invalid_client", body = super::provider::OAuthError)))]
pub async fn revoke(
    State(state): State<ApiState>,
    headers: HeaderMap,
    form: Result<Form<RevokeRequest>, FormRejection>,
) -> Response {
    let req = match form {
        Ok(Form(req)) => req,
        Err(e) => return super::provider::not_a_form(e),
    };
    match revoke_token(&state, &headers, &req).await {
        Ok(()) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn revoke_token(
    state: &ApiState,
    headers: &HeaderMap,
    req: &RevokeRequest,
) -> Result<(), TokenError> {
    let app = authenticate_client(
        state,
        headers,
        req.client_id.as_deref(),
        req.client_secret.as_deref(),
    )
    .await?;
    let Some(token) = req.token.as_deref().filter(|t| !t.is_empty()) else {
        return Err(TokenError::new("invalid_request", "token is missing"));
    };
    let hash = crate::auth::token_hash(token);
    let now = lotus_device::now_ms();
    let refresh_first = req.token_type_hint.as_deref() == Some("refresh_token");
    let mut revoked = None;
    for refresh in [refresh_first, !refresh_first] {
        revoked = if refresh {
            revoke_refresh(state, &app.client_id, &hash, now).await?
        } else if state
            .store
            .revoke_oidc_access_token(&hash, &app.client_id)
            .await?
        {
            Some(("access_token", 1))
        } else {
            None
        };
        if revoked.is_some() {
            break;
        }
    }
    if let Some((kind, tokens)) = revoked {
        tracing::info!(app = %app.client_id, kind, tokens, "token revoked by its client");
        crate::audit::record(
            state,
            &app.client_id,
            "oidc.revoke",
            &format!("app:{}", app.client_id),
            "ok",
            json!({"reason": "revocation request", "tokenType": kind, "tokens": tokens}),
        )
        .await;
    }
    Ok(())
}

/// Revokes the grant of a refresh token of `client_id`, spent or not.
async fn revoke_refresh(
    state: &ApiState,
    client_id: &str,
    hash: &str,
    now: i64,
) -> Result<Option<(&'static str, u64)>, TokenError> {
    let Some(found) = state.store.oidc_refresh_token(hash, now).await? else {
        return Ok(None);
    };
    if found.client_id != client_id {
        return Ok(None);
    }
    let grant = OidcGrant {
        grant_id: found.grant_id,
        client_id: found.client_id,
        user_id: found.user_id,
        auth_time: found.auth_time,
    };
    let n = state.store.revoke_oidc_grant(&grant, now).await?;
    Ok(Some(("refresh_token", n)))
}
