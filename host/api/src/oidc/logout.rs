//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).
//!
//! The app sends the browser to `GET /oauth2/logout` with the ID token it holds for the user
//! (`id_token_hint`). Lotus checks the token's signature (an expired token is fine: logging
//! out usually happens after it expired) and the `post_logout_redirect_uri` against the app's
//! registered `postLogoutRedirectUris`, revokes every token it issued to that app for that
//! user, and sends the browser to the portal's `/logout-complete` page. The portal holds its
//! session as a bearer token in the browser, which the server cannot clear; that page calls
//! `POST /api/v1/oauth2/end-session` with the same parameters and its token, which ends the
//! portal session when it belongs to the same user, and then goes where the answer says.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lotus_storage::AppRow;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::provider::with_params;
use super::{error_page, found};
use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Query};

/// A logout request (RP-Initiated Logout 1.0 §2).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogoutParams {
    /// An ID token Lotus issued to the app for the user (expired ones are accepted).
    pub id_token_hint: Option<String>,
    /// One of the app's registered `postLogoutRedirectUris`; without it the user stays on a
    /// portal page that says they are logged out.
    pub post_logout_redirect_uri: Option<String>,
    /// Returned unchanged with the redirect.
    pub state: Option<String>,
    /// If sent, must be the ID token's audience.
    pub client_id: Option<String>,
}

/// A logout request that passed validation.
struct Valid {
    app: AppRow,
    user_id: i64,
    /// Where the browser goes in the end, with `state`.
    redirect: Option<String>,
}

fn refused(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request(detail)
}

/// The public key that signed `id_token` (retired keys included, while they are published).
async fn signing_key(state: &ApiState, kid: &str) -> ApiResult<DecodingKey> {
    let keys = super::keys::published(&state.store, state.oidc.settings.key_retention).await?;
    let row = keys.iter().find(|k| k.kid == kid).ok_or_else(|| {
        refused(format!(
            "id_token_hint is signed with key '{kid}', which this provider does not publish: \
             the token is not one of Lotus's, or so old that its key was retired"
        ))
    })?;
    let jwk: Jwk = serde_json::from_str(&row.public_jwk)
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    DecodingKey::from_jwk(&jwk)
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn validate(state: &ApiState, p: &LogoutParams) -> ApiResult<Valid> {
    let hint = p
        .id_token_hint
        .as_deref()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            refused(
                "the app sent no id_token_hint: it must send the ID token Lotus issued to it \
                 for the user who logs out",
            )
        })?;
    let bad = |e: jsonwebtoken::errors::Error| {
        refused(format!(
            "id_token_hint is not an ID token this provider issued: {e}"
        ))
    };
    let header = jsonwebtoken::decode_header(hint).map_err(bad)?;
    if header.alg != Algorithm::ES256 {
        return Err(refused("id_token_hint must be signed with ES256"));
    }
    let kid = header
        .kid
        .ok_or_else(|| refused("id_token_hint names no signing key (kid)"))?;
    let key = signing_key(state, &kid).await?;
    let mut validation = Validation::new(Algorithm::ES256);
    // Logging out is what one does with an expired session, so an expired token still names
    // the user; the signature and the issuer are what make it trustworthy.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_issuer(&[state.oidc.issuer()]);
    validation.set_required_spec_claims(&["iss", "sub", "aud"]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(hint, &key, &validation)
        .map_err(bad)?
        .claims;
    let aud = match &claims["aud"] {
        Value::String(a) => a.clone(),
        Value::Array(a) if a.len() == 1 => a[0].as_str().unwrap_or_default().to_string(),
        _ => return Err(refused("id_token_hint must name one audience (the app)")),
    };
    if let Some(client_id) = p.client_id.as_deref().filter(|c| !c.is_empty())
        && client_id != aud
    {
        return Err(refused(format!(
            "client_id '{client_id}' is not the audience of id_token_hint ('{aud}')"
        )));
    }
    let user_id: i64 = claims["sub"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| refused("id_token_hint has no subject Lotus issues (a user id)"))?;
    let app = state.store.app_by_client_id(&aud).await?.ok_or_else(|| {
        refused(format!(
            "the app of id_token_hint ('{aud}') is no longer registered on this platform"
        ))
    })?;
    let redirect = match p
        .post_logout_redirect_uri
        .as_deref()
        .filter(|u| !u.is_empty())
    {
        None => None,
        Some(uri) if app.post_logout_redirect_uris.iter().any(|r| r == uri) => {
            Some(match p.state.as_deref().filter(|s| !s.is_empty()) {
                Some(s) => with_params(uri, &[("state", s)]),
                // Exactly as registered (no empty `?`).
                None => uri.to_string(),
            })
        }
        Some(uri) => {
            return Err(refused(format!(
                "post_logout_redirect_uri '{uri}' is not registered for app '{}' ({}): the \
                 registry's postLogoutRedirectUris must list it exactly",
                app.name, app.client_id
            )));
        }
    };
    Ok(Valid {
        app,
        user_id,
        redirect,
    })
}

/// The end-session endpoint. Checks `id_token_hint` and `post_logout_redirect_uri`, revokes
/// the tokens Lotus issued to the app for the user, and sends the browser to the portal's
/// `/logout-complete` page, which ends the portal session and then goes to
/// `post_logout_redirect_uri` (with `state`). A bad request gets an error page, never a
/// redirect.
#[utoipa::path(get, path = "/oauth2/logout", tag = "openid connect", params(LogoutParams),
    responses((status = 302, description = "to the portal's /logout-complete page"),
        (status = 400, description = "missing or invalid id_token_hint, unregistered post_logout_redirect_uri", body = crate::problem::Problem)))]
pub async fn logout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    Query(params): Query<LogoutParams>,
) -> Response {
    let valid = match validate(&state, &params).await {
        Ok(v) => v,
        Err(e) => return error_page(&headers, e),
    };
    let now = lotus_device::now_ms();
    let revoked = match state
        .store
        .revoke_oidc_tokens_of(&valid.app.client_id, valid.user_id, now)
        .await
    {
        Ok(n) => n,
        Err(e) => return error_page(&headers, e.into()),
    };
    let actor = match state.store.user_by_id(valid.user_id).await {
        Ok(Some(user)) => user.username,
        _ => format!("user-id:{}", valid.user_id),
    };
    tracing::info!(user = %actor, app = %valid.app.client_id, revoked, "RP-initiated logout");
    crate::audit::record(
        &state,
        &actor,
        "oidc.logout",
        &format!("app:{}", valid.app.client_id),
        "ok",
        json!({"revokedTokens": revoked, "postLogoutRedirectUri": params.post_logout_redirect_uri}),
    )
    .await;
    found(&format!("/logout-complete?{}", raw.unwrap_or_default()))
}

/// What the portal's `/logout-complete` page does next.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndSession {
    /// The app's `post_logout_redirect_uri` with `state`; absent: stay on the portal.
    pub redirect: Option<String>,
    /// The portal session of the request (its bearer token) was the logged-out user's and has
    /// ended: the portal forgets its token.
    pub session_ended: bool,
}

/// Completes an RP-initiated logout in the portal: checks the logout request again and ends
/// the session of the request's bearer token (if any) when it belongs to the user the
/// `id_token_hint` names, so one user's logout does not end another's session.
#[utoipa::path(post, path = "/api/v1/oauth2/end-session", tag = "openid connect",
    request_body = LogoutParams,
    responses((status = 200, body = EndSession),
        (status = 400, description = "missing or invalid id_token_hint, unregistered post_logout_redirect_uri", body = crate::problem::Problem)))]
pub async fn end_session(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(params): Json<LogoutParams>,
) -> ApiResult<Json<EndSession>> {
    let valid = validate(&state, &params).await?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let mut session_ended = false;
    // An unknown or expired portal token has nothing left to end.
    if let Some(token) = token
        && let Ok(caller) = Authenticated::from_token(&state, token).await
        && let Some(user) = caller.person()
        && user.id == valid.user_id
    {
        state.store.delete_session(caller.session()).await?;
        session_ended = true;
        tracing::info!(user = %user.username, app = %valid.app.client_id, "portal session ended by an app's logout");
        crate::audit::record(
            &state,
            &user.username,
            "auth.logout",
            &format!("user:{}", user.username),
            "ok",
            json!({"via": "oidc.logout", "app": valid.app.client_id}),
        )
        .await;
    }
    Ok(Json(EndSession {
        redirect: valid.redirect,
        session_ended,
    }))
}
