//! Lotus as an OpenID Connect provider (OpenID Connect Core 1.0, authorization code flow with
//! PKCE S256 only, refresh tokens with rotation; RFC 6749, RFC 7636, RFC 9207).
//!
//! Clients are the apps of the app registry: their `client_id`, sealed secret and
//! `redirect_uris`. The user is whoever holds the portal session that calls
//! `POST /api/v1/oauth2/authorize`; the `lotus.api` policy decides whether they may open the
//! app (`app.open`). ID tokens are ES256 JWS; access and refresh tokens are opaque and stored
//! hashed. Everything issued from one authorization code is one grant, revoked as a whole when
//! the code or a spent refresh token is presented again (RFC 6749 §10.5, OAuth 2.0 Security
//! BCP §4.14.2).

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use lotus_storage::{
    AppRow, CodeRedemption, OidcAccessToken, OidcCode, OidcGrant, OidcRefreshToken, UserRow,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{constant_time_eq, error_page, found, random_token, s256, session_user};
use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Query};

/// An authorization code's life (OAuth 2.0 Security BCP: at most a minute or so).
const CODE_TTL_MS: i64 = 60_000;

/// The life of ID and access tokens.
pub(crate) const TOKEN_TTL_SECS: i64 = 3600;

/// The life of a refresh token; each refresh issues a new one with a new life.
const REFRESH_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// The scopes the provider understands; others are ignored (RFC 6749 §3.3 lets it).
/// `offline_access` asks for a refresh token.
const SCOPES: [&str; 4] = ["openid", "profile", "email", OFFLINE_ACCESS];

const OFFLINE_ACCESS: &str = "offline_access";

/// The `prompt` values the authorization endpoint accepts (OpenID Connect Core §3.1.2.1).
/// `consent` and `select_account` are accepted and change nothing: the registry's
/// administrator consented for the city when registering the app, and a portal session is one
/// account.
const PROMPTS: [&str; 4] = ["none", "login", "consent", "select_account"];

/// Longest `state` and `nonce` carried through: they are echoed into URLs and tokens.
const MAX_ECHOED: usize = 512;

/// The OpenID Provider Metadata (OpenID Connect Discovery 1.0).
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "openid connect",
    responses((status = 200, description = "the provider's metadata", body = Object)))]
pub async fn discovery(State(state): State<ApiState>) -> Response {
    let iss = state.oidc.issuer();
    let doc = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oauth2/authorize"),
        "token_endpoint": format!("{iss}/oauth2/token"),
        "userinfo_endpoint": format!("{iss}/oauth2/userinfo"),
        "jwks_uri": format!("{iss}/oauth2/jwks"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "end_session_endpoint": format!("{iss}/oauth2/logout"),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [super::keys::ALG],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": PROMPTS,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce",
            "preferred_username", "name", "email", "roles"],
        "authorization_response_iss_parameter_supported": true,
    });
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(doc),
    )
        .into_response()
}

/// The public keys ID tokens are signed with (JWK Set), retired keys included.
#[utoipa::path(get, path = "/oauth2/jwks", tag = "openid connect",
    responses((status = 200, description = "JWK Set", body = Object)))]
pub async fn jwks(State(state): State<ApiState>) -> ApiResult<Response> {
    // Make the first key now, so that a client fetching the JWKS before any log-in has the key
    // its first ID token will carry.
    state.oidc.keys.active(&state.store).await?;
    let set = super::keys::jwks(&state.store, state.oidc.settings.key_retention).await?;
    Ok((
        [
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::CONTENT_TYPE, "application/jwk-set+json"),
        ],
        set.to_string(),
    )
        .into_response())
}

/// An authorization request (RFC 6749 §4.1.1 with PKCE and OpenID Connect's `nonce`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeParams {
    /// Must be `code`.
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    /// Exactly one of the app's registered redirect URIs.
    pub redirect_uri: Option<String>,
    /// Space-separated; must contain `openid` (`profile` and `email` add claims).
    pub scope: Option<String>,
    /// Returned unchanged to the app.
    pub state: Option<String>,
    /// Copied into the ID token.
    pub nonce: Option<String>,
    /// base64url(SHA-256(code_verifier)).
    pub code_challenge: Option<String>,
    /// Must be `S256` (`plain` is refused).
    pub code_challenge_method: Option<String>,
    /// Space-separated: `none` (never show a page: answer `login_required` when nobody is
    /// logged in), `login` (the user enters the password again); `consent` and
    /// `select_account` are accepted and change nothing.
    pub prompt: Option<String>,
    /// Seconds: a log-in older than this makes the user enter the password again.
    #[serde(default, deserialize_with = "text_or_number")]
    #[schema(value_type = Option<String>)]
    #[param(value_type = Option<String>)]
    pub max_age: Option<String>,
}

/// `max_age` as the query carries it (text) or as a JSON client may send it (a number).
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

/// Why an authorization request is refused: shown to the user when the redirect URI cannot be
/// trusted (RFC 6749 §4.1.2.1), otherwise sent back to the app.
enum Refusal {
    Page(ApiError),
    Redirect(String),
}

/// A request that passed validation.
struct Valid {
    app: AppRow,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    challenge: String,
    /// `prompt=none`: refusals go back to the app, no page is shown.
    prompt_none: bool,
    /// `prompt=login`: the user enters the password again.
    prompt_login: bool,
    /// `max_age` in milliseconds.
    max_age_ms: Option<i64>,
}

impl Valid {
    /// The redirect URI with an error for the app (RFC 6749 §4.1.2.1).
    fn error(&self, iss: &str, error: &str, description: &str) -> String {
        let mut params = vec![("error", error), ("error_description", description)];
        if let Some(s) = self.state.as_deref() {
            params.push(("state", s));
        }
        params.push(("iss", iss));
        with_params(&self.redirect_uri, &params)
    }
}

/// `redirect_uri` with `params` added to its query.
pub(crate) fn with_params(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    match reqwest::Url::parse(redirect_uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(params);
            url.to_string()
        }
        // Registered URIs are absolute; should one not parse, append rather than lose the answer.
        Err(_) => {
            let sep = if redirect_uri.contains('?') { '&' } else { '?' };
            let query = params
                .iter()
                .map(|(k, v)| format!("{k}={}", percent_encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            format!("{redirect_uri}{sep}{query}")
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A PKCE challenge or verifier: 43 to 128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
fn pkce_syntax(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

async fn validate(state: &ApiState, p: &AuthorizeParams) -> Result<Valid, Refusal> {
    let page = |detail: String| Refusal::Page(ApiError::bad_request(detail));
    let client_id = p
        .client_id
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            page(
                "the app sent no client_id: it must send the client_id it was registered with"
                    .into(),
            )
        })?;
    let app = state
        .store
        .app_by_client_id(client_id)
        .await
        .map_err(|e| Refusal::Page(e.into()))?
        .ok_or_else(|| {
            page(format!(
                "no app with client_id '{client_id}' is registered on this platform: ask an \
                 administrator to register it"
            ))
        })?;
    let redirect_uri = p
        .redirect_uri
        .as_deref()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            page(format!(
                "app '{}' sent no redirect_uri: it must send one of its registered redirect URIs",
                app.name
            ))
        })?;
    if !app.redirect_uris.iter().any(|r| r == redirect_uri) {
        return Err(page(format!(
            "redirect_uri '{redirect_uri}' is not registered for app '{}' ({client_id}): the \
             registry must list it exactly (scheme, host, port and path)",
            app.name
        )));
    }
    // From here on the redirect URI is trusted, so errors go back to the app.
    let echo_state = p.state.clone().filter(|s| !s.is_empty());
    let back = |error: &str, description: String| {
        let mut params = vec![
            ("error", error),
            ("error_description", description.as_str()),
        ];
        if let Some(s) = echo_state.as_deref() {
            params.push(("state", s));
        }
        params.push(("iss", state.oidc.issuer()));
        Refusal::Redirect(with_params(redirect_uri, &params))
    };
    if echo_state.as_ref().is_some_and(|s| s.len() > MAX_ECHOED)
        || p.nonce.as_ref().is_some_and(|n| n.len() > MAX_ECHOED)
    {
        return Err(back(
            "invalid_request",
            format!("state and nonce may have at most {MAX_ECHOED} characters"),
        ));
    }
    match p.response_type.as_deref() {
        Some("code") => {}
        None | Some("") => {
            return Err(back(
                "invalid_request",
                "response_type is missing: send response_type=code".into(),
            ));
        }
        Some(other) => {
            return Err(back(
                "unsupported_response_type",
                format!(
                    "response_type '{other}' is not supported: use the authorization code flow (response_type=code)"
                ),
            ));
        }
    }
    let requested: Vec<&str> = p
        .scope
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    if !requested.contains(&"openid") {
        return Err(back(
            "invalid_scope",
            "scope must contain 'openid' (this is an OpenID Connect provider)".into(),
        ));
    }
    let scope = SCOPES
        .iter()
        .filter(|s| requested.contains(s))
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let prompts: Vec<&str> = p
        .prompt
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    if let Some(unknown) = prompts.iter().find(|v| !PROMPTS.contains(v)) {
        return Err(back(
            "invalid_request",
            format!(
                "prompt '{unknown}' is not supported: use none, login, consent or select_account"
            ),
        ));
    }
    let prompt_none = prompts.contains(&"none");
    if prompt_none && prompts.len() > 1 {
        return Err(back(
            "invalid_request",
            "prompt=none cannot be combined with other prompt values".into(),
        ));
    }
    let max_age_ms = match p.max_age.as_deref().filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => match m.parse::<i64>() {
            Ok(secs) if (0..=i64::MAX / 1000).contains(&secs) => Some(secs * 1000),
            _ => {
                return Err(back(
                    "invalid_request",
                    format!("max_age '{m}' must be a whole number of seconds (0 or more)"),
                ));
            }
        },
    };
    let Some(challenge) = p.code_challenge.as_deref().filter(|c| !c.is_empty()) else {
        return Err(back(
            "invalid_request",
            "PKCE is required: send code_challenge and code_challenge_method=S256".into(),
        ));
    };
    match p.code_challenge_method.as_deref() {
        Some("S256") => {}
        Some("plain") => {
            return Err(back(
                "invalid_request",
                "code_challenge_method 'plain' is refused: use S256".into(),
            ));
        }
        other => {
            return Err(back(
                "invalid_request",
                format!(
                    "code_challenge_method must be S256, not {}",
                    other.map_or("missing".into(), |m| format!("'{m}'"))
                ),
            ));
        }
    }
    if !pkce_syntax(challenge) {
        return Err(back(
            "invalid_request",
            "code_challenge must be the base64url SHA-256 of the code verifier (43 characters)"
                .into(),
        ));
    }
    if !app.is_online() {
        return Err(back(
            "access_denied",
            format!(
                "app '{}' is offline: an administrator has to set it online",
                app.name
            ),
        ));
    }
    Ok(Valid {
        redirect_uri: redirect_uri.to_string(),
        scope,
        state: echo_state,
        nonce: p.nonce.clone().filter(|n| !n.is_empty()),
        challenge: challenge.to_string(),
        prompt_none,
        prompt_login: prompts.contains(&"login"),
        max_age_ms,
        app,
    })
}

/// The authorization endpoint. Validates the request, then sends the browser to the portal's
/// `/authorize` page, which asks who the user is (logging them in first if needed) and
/// completes the request with `POST /api/v1/oauth2/authorize`. A request whose `client_id`
/// or `redirect_uri` is wrong gets an error page; other errors go back to the redirect URI.
#[utoipa::path(get, path = "/oauth2/authorize", tag = "openid connect", params(AuthorizeParams),
    responses((status = 302, description = "to the portal's authorize page, or back to the app with an error"),
        (status = 400, description = "unknown client or unregistered redirect URI", body = crate::problem::Problem)))]
pub async fn authorize(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    Query(params): Query<AuthorizeParams>,
) -> Response {
    match validate(&state, &params).await {
        Ok(_) => found(&format!("/authorize?{}", raw.unwrap_or_default())),
        Err(Refusal::Redirect(location)) => found(&location),
        Err(Refusal::Page(e)) => error_page(&headers, e),
    }
}

/// Where the portal sends the browser next, or that the user must enter the password first.
#[derive(Serialize, ToSchema)]
pub struct AuthorizeRedirect {
    /// The app's redirect URI with `code`, `state` and `iss` (or `error` and
    /// `error_description`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    /// Set instead of `redirect` when the request has `prompt=login` (`login`) or its
    /// `max_age` is older than the session's log-in (`max_age`): send the request again with
    /// the user's `password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reauthenticate: Option<String>,
}

impl AuthorizeRedirect {
    fn to(redirect: String) -> Json<Self> {
        Json(AuthorizeRedirect {
            redirect: Some(redirect),
            reauthenticate: None,
        })
    }
}

/// An authorization request as the portal completes it for the logged-in user.
#[derive(Deserialize, ToSchema)]
pub struct AuthorizeAsUser {
    #[serde(flatten)]
    pub params: AuthorizeParams,
    /// The logged-in user's password, entered again for `prompt=login` or `max_age`; the
    /// session's log-in time becomes now.
    pub password: Option<String>,
}

/// Completes an authorization request for the logged-in user: the portal's `/authorize` page
/// calls it with the request's parameters. Asks the policy `app.open` on the app (resource
/// `{kind: "app", id: client_id, org, region, openRoles}`); a refusal is a 403 the portal shows
/// (with `prompt=none`, an `access_denied` redirect to the app). With `prompt=login`, or a
/// `max_age` older than the session's log-in, the answer asks for the password
/// (`reauthenticate`) unless the request carries it; a wrong password is a 403.
#[utoipa::path(post, path = "/api/v1/oauth2/authorize", tag = "openid connect",
    security(("bearer" = [])), request_body = AuthorizeAsUser,
    responses((status = 200, body = AuthorizeRedirect),
        (status = 400, description = "unknown client or unregistered redirect URI", body = crate::problem::Problem),
        (status = 403, description = "the policy does not let this user open the app, or the password is wrong", body = crate::problem::Problem)))]
pub async fn authorize_as_user(
    State(state): State<ApiState>,
    caller: Authenticated,
    Json(body): Json<AuthorizeAsUser>,
) -> ApiResult<Json<AuthorizeRedirect>> {
    let user = session_user(&caller)?;
    let valid = match validate(&state, &body.params).await {
        Ok(v) => v,
        Err(Refusal::Page(e)) => return Err(e),
        Err(Refusal::Redirect(redirect)) => return Ok(AuthorizeRedirect::to(redirect)),
    };
    let app = &valid.app;
    let iss = state.oidc.issuer();
    let target = format!("app:{}", app.client_id);
    if let Err(e) = crate::authz::check(&state, &caller, "app.open", open_resource(app)) {
        crate::audit::record(
            &state,
            &user.username,
            "oidc.authorize",
            &target,
            "denied",
            json!({"reason": e.detail}),
        )
        .await;
        if valid.prompt_none {
            return Ok(AuthorizeRedirect::to(valid.error(
                iss,
                "access_denied",
                &e.detail,
            )));
        }
        return Err(e);
    }
    let now = lotus_device::now_ms();
    let mut auth_time = state
        .store
        .session_authenticated_at(caller.session())
        .await?
        .unwrap_or(now);
    if let Some(password) = body.password.as_deref() {
        super::reauth::verify_password_again(&state, user, password, now).await?;
        state
            .store
            .reauthenticate_session(caller.session(), now)
            .await?;
        auth_time = now;
    } else {
        let too_old = valid.max_age_ms.is_some_and(|max| now - auth_time > max);
        if valid.prompt_login || too_old {
            let reason = if valid.prompt_login {
                "login"
            } else {
                "max_age"
            };
            if valid.prompt_none {
                // prompt=none excludes prompt=login, so only max_age gets here.
                return Ok(AuthorizeRedirect::to(valid.error(
                    iss,
                    "login_required",
                    "the user's log-in is older than max_age and prompt=none forbids asking for the password",
                )));
            }
            return Ok(Json(AuthorizeRedirect {
                redirect: None,
                reauthenticate: Some(reason.into()),
            }));
        }
    }
    let code = random_token();
    state
        .store
        .create_oidc_code(
            &crate::auth::token_hash(&code),
            &OidcCode {
                client_id: app.client_id.clone(),
                user_id: user.id,
                redirect_uri: valid.redirect_uri.clone(),
                scope: valid.scope.clone(),
                nonce: valid.nonce.clone(),
                code_challenge: valid.challenge.clone(),
                auth_time,
                expires_at: now + CODE_TTL_MS,
            },
        )
        .await?;
    tracing::info!(user = %user.username, app = %app.client_id, "authorization code issued");
    crate::audit::record(
        &state,
        &user.username,
        "oidc.authorize",
        &target,
        "ok",
        json!({"scope": valid.scope, "redirectUri": valid.redirect_uri}),
    )
    .await;
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = valid.state.as_deref() {
        params.push(("state", s));
    }
    params.push(("iss", iss));
    Ok(AuthorizeRedirect::to(with_params(
        &valid.redirect_uri,
        &params,
    )))
}

/// What the app is told when the portal has nobody logged in and the request has
/// `prompt=none`: its redirect URI with `error=login_required` (OpenID Connect Core
/// §3.1.2.6). Other requests are refused (400): the portal logs the user in for them.
#[utoipa::path(post, path = "/api/v1/oauth2/authorize/login-required", tag = "openid connect",
    request_body = AuthorizeParams,
    responses((status = 200, body = AuthorizeRedirect),
        (status = 400, description = "unknown client, unregistered redirect URI, or not prompt=none", body = crate::problem::Problem)))]
pub async fn login_required(
    State(state): State<ApiState>,
    Json(params): Json<AuthorizeParams>,
) -> ApiResult<Json<AuthorizeRedirect>> {
    let valid = match validate(&state, &params).await {
        Ok(v) => v,
        Err(Refusal::Page(e)) => return Err(e),
        Err(Refusal::Redirect(redirect)) => return Ok(AuthorizeRedirect::to(redirect)),
    };
    if !valid.prompt_none {
        return Err(ApiError::bad_request(
            "only a prompt=none request is answered without a log-in: log in and send it to \
             POST /api/v1/oauth2/authorize",
        ));
    }
    Ok(AuthorizeRedirect::to(valid.error(
        state.oidc.issuer(),
        "login_required",
        "nobody is logged in to the portal and prompt=none forbids asking",
    )))
}

/// The app as the `lotus.api` policy sees it for `app.open`.
pub(crate) fn open_resource(app: &AppRow) -> Value {
    json!({
        "kind": "app",
        "id": app.client_id,
        "org": app.scope.org,
        "region": app.scope.region,
        "openRoles": app.open_roles,
    })
}

/// A token request (RFC 6749 §4.1.3, §6), form-encoded.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `authorization_code` or `refresh_token`.
    pub grant_type: Option<String>,
    pub code: Option<String>,
    /// With `grant_type=refresh_token`: the refresh token (it is spent; a new one comes back).
    pub refresh_token: Option<String>,
    /// With `grant_type=refresh_token`: a narrower scope than the grant's (never wider).
    pub scope: Option<String>,
    /// The same redirect URI as in the authorization request.
    pub redirect_uri: Option<String>,
    /// The PKCE verifier whose S256 challenge the authorization request carried.
    pub code_verifier: Option<String>,
    /// With `client_secret_post`; with `client_secret_basic` it may be left out.
    pub client_id: Option<String>,
    /// `client_secret_post`; otherwise use HTTP Basic.
    pub client_secret: Option<String>,
}

/// The token response (OpenID Connect Core §3.1.3.3).
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// Opaque; send as `Authorization: Bearer` to `/oauth2/userinfo`.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds.
    pub expires_in: i64,
    /// ES256 JWS: iss, sub, aud, exp, iat, auth_time, nonce, preferred_username, roles, and
    /// name / email when the scope asks.
    pub id_token: String,
    /// Opaque, single use, 30 days; only when the scope has `offline_access`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// An OAuth error response (RFC 6749 §5.2).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
}

pub(crate) struct TokenError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// The client authenticated with HTTP Basic (a 401 then names the scheme).
    basic: bool,
}

impl TokenError {
    pub(crate) fn new(error: &'static str, description: impl Into<String>) -> Self {
        TokenError {
            status: if error == "invalid_client" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            },
            error,
            description: description.into(),
            basic: false,
        }
    }
}

impl From<ApiError> for TokenError {
    fn from(e: ApiError) -> Self {
        TokenError {
            status: e.status,
            error: "server_error",
            description: e.detail,
            basic: false,
        }
    }
}

impl From<lotus_storage::StorageError> for TokenError {
    fn from(e: lotus_storage::StorageError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            axum::Json(OAuthError {
                error: self.error.into(),
                error_description: self.description,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED && self.basic {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"lotus\""),
            );
        }
        resp
    }
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` is a space).
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `client_secret_basic` credentials: `Basic base64(urlencode(id):urlencode(secret))`
/// (RFC 6749 §2.3.1). `Ok(None)` when there is no Basic header.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, TokenError> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return Ok(None);
    };
    let bad = || {
        let mut e = TokenError::new(
            "invalid_client",
            "the Authorization header must be Basic base64(client_id:client_secret)",
        );
        e.basic = true;
        e
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some((
        form_decode(id).ok_or_else(bad)?,
        form_decode(secret).ok_or_else(bad)?,
    )))
}

/// The app that authenticated at the token or revocation endpoint, with `client_secret_basic`
/// (the header) or `client_secret_post` (`body_id` and `body_secret` from the form).
pub(crate) async fn authenticate_client(
    state: &ApiState,
    headers: &HeaderMap,
    body_id: Option<&str>,
    body_secret: Option<&str>,
) -> Result<AppRow, TokenError> {
    let basic = basic_credentials(headers)?;
    let via_basic = basic.is_some();
    let (client_id, secret) = match (basic, body_secret) {
        (Some(_), Some(_)) => {
            return Err(TokenError::new(
                "invalid_request",
                "send the client secret once: in the Basic header or in the body, not both",
            ));
        }
        (Some((id, secret)), None) => {
            if body_id.is_some_and(|body| body != id) {
                return Err(TokenError::new(
                    "invalid_request",
                    "client_id in the body differs from the one in the Basic header",
                ));
            }
            (id, secret)
        }
        (None, Some(secret)) => match body_id {
            Some(id) => (id.to_string(), secret.to_string()),
            None => {
                return Err(TokenError::new(
                    "invalid_client",
                    "client_secret without client_id",
                ));
            }
        },
        (None, None) => {
            return Err(TokenError::new(
                "invalid_client",
                "the client did not authenticate: use HTTP Basic (client_secret_basic) or \
                 client_id and client_secret in the body (client_secret_post)",
            ));
        }
    };
    let refuse = |description: String| {
        let mut e = TokenError::new("invalid_client", description);
        e.basic = via_basic;
        e
    };
    let stored = state.store.app_with_secret(&client_id).await?;
    // Compare against something even for an unknown client, so timing does not tell which
    // client ids exist.
    let matches = constant_time_eq(
        stored
            .as_ref()
            .map_or("\u{0}no client", |(_, s)| s.expose()),
        &secret,
    );
    let (Some((app, _)), true) = (stored, matches) else {
        tracing::warn!(client_id = %client_id, "token request with a wrong client secret or unknown client");
        return Err(refuse("unknown client or wrong client secret".into()));
    };
    if !app.is_online() {
        return Err(TokenError::new(
            "unauthorized_client",
            format!(
                "app '{}' is offline: an administrator has to set it online",
                app.name
            ),
        ));
    }
    Ok(app)
}

/// The ID token's claims.
#[derive(Serialize)]
struct IdTokenClaims<'a> {
    iss: &'a str,
    sub: String,
    aud: &'a str,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(flatten)]
    user: Map<String, Value>,
}

/// What a scope reveals of a user: `sub`, `preferred_username` and `roles` always; `name`
/// with `profile`, `email` with `email` (where the user gave them).
fn user_claims(user: &UserRow, scope: &str) -> Map<String, Value> {
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(user.id.to_string()));
    claims.insert("preferred_username".into(), json!(user.username));
    if scopes.contains(&"profile")
        && let Some(name) = &user.profile.display_name
    {
        claims.insert("name".into(), json!(name));
    }
    if scopes.contains(&"email")
        && let Some(email) = &user.profile.email
    {
        claims.insert("email".into(), json!(email));
    }
    claims.insert("roles".into(), json!(user.roles));
    claims
}

/// RFC 6749 §5.2's answer to a body that is not a form (token and revocation endpoints).
pub(super) fn not_a_form(e: FormRejection) -> Response {
    TokenError::new(
        "invalid_request",
        format!(
            "the body must be application/x-www-form-urlencoded: {}",
            e.body_text()
        ),
    )
    .into_response()
}

/// The token endpoint: exchanges an authorization code (with its PKCE verifier), or a refresh
/// token, for an ID token and an access token (and a new refresh token when the scope has
/// `offline_access`). Clients authenticate with `client_secret_basic` or
/// `client_secret_post`. A code or refresh token presented twice revokes every token of its
/// sign-in. Errors are RFC 6749 §5.2 JSON.
#[utoipa::path(post, path = "/oauth2/token", tag = "openid connect",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse),
        (status = 400, description = "invalid_request, invalid_grant, invalid_scope, unsupported_grant_type, unauthorized_client", body = OAuthError),
        (status = 401, description = "invalid_client", body = OAuthError)))]
pub async fn token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    let req = match form {
        Ok(Form(req)) => req,
        Err(e) => return not_a_form(e),
    };
    match exchange(&state, &headers, &req).await {
        Ok(resp) => (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            axum::Json(resp),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn exchange(
    state: &ApiState,
    headers: &HeaderMap,
    req: &TokenRequest,
) -> Result<TokenResponse, TokenError> {
    let app = authenticate_client(
        state,
        headers,
        req.client_id.as_deref(),
        req.client_secret.as_deref(),
    )
    .await?;
    let refuse = Refuse { state, app: &app };
    match req.grant_type.as_deref() {
        Some("authorization_code") => exchange_code(state, &app, req, &refuse).await,
        Some("refresh_token") => exchange_refresh(state, &app, req, &refuse).await,
        Some(other) => Err(refuse
            .with(
                "unsupported_grant_type",
                format!(
                    "grant_type '{other}' is not supported: use authorization_code or refresh_token"
                ),
            )
            .await),
        None => Err(refuse
            .with("invalid_request", "grant_type is missing".into())
            .await),
    }
}

/// A refusal at the token endpoint, recorded in the audit log.
struct Refuse<'a> {
    state: &'a ApiState,
    app: &'a AppRow,
}

impl Refuse<'_> {
    async fn with(&self, error: &'static str, description: String) -> TokenError {
        crate::audit::record(
            self.state,
            &self.app.client_id,
            "oidc.token",
            &format!("app:{}", self.app.client_id),
            "failed",
            json!({"error": error, "reason": description}),
        )
        .await;
        TokenError::new(error, description)
    }
}

async fn exchange_code(
    state: &ApiState,
    app: &AppRow,
    req: &TokenRequest,
    refuse: &Refuse<'_>,
) -> Result<TokenResponse, TokenError> {
    let Some(code) = req.code.as_deref().filter(|c| !c.is_empty()) else {
        return Err(refuse
            .with("invalid_request", "code is missing".into())
            .await);
    };
    let now = lotus_device::now_ms();
    let code_hash = crate::auth::token_hash(code);
    // The code is spent from here on, whatever follows: a wrong verifier burns it, so a stolen
    // code cannot be tried against many verifiers.
    let grant = match state.store.redeem_oidc_code(&code_hash, now).await? {
        CodeRedemption::Fresh(grant) => grant,
        CodeRedemption::Reused { client_id, user_id } => {
            tracing::warn!(app = %app.client_id, issued_to = %client_id, user_id,
                "an authorization code was presented again: its tokens are revoked");
            crate::audit::record(
                state,
                &app.client_id,
                "oidc.revoke",
                &format!("app:{client_id}"),
                "ok",
                json!({"reason": "authorization code reused", "userId": user_id}),
            )
            .await;
            return Err(refuse
                .with(
                    "invalid_grant",
                    "the code was already used: the tokens issued from it are revoked; start the \
                     authorization again"
                        .into(),
                )
                .await);
        }
        CodeRedemption::Unknown => {
            return Err(refuse
                .with(
                    "invalid_grant",
                    "the code is unknown or expired: start the authorization again".into(),
                )
                .await);
        }
    };
    if grant.client_id != app.client_id {
        return Err(refuse
            .with(
                "invalid_grant",
                "the code was issued to another client".into(),
            )
            .await);
    }
    if req.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
        return Err(refuse
            .with(
                "invalid_grant",
                "redirect_uri differs from the one in the authorization request".into(),
            )
            .await);
    }
    let verifier = req.code_verifier.as_deref().unwrap_or("");
    if !pkce_syntax(verifier) || !constant_time_eq(&s256(verifier), &grant.code_challenge) {
        return Err(refuse
            .with(
                "invalid_grant",
                "code_verifier does not match the code_challenge of the authorization request"
                    .into(),
            )
            .await);
    }
    let user = active_user(state, grant.user_id, now, refuse).await?;
    issue(
        state,
        app,
        &user,
        &OidcGrant {
            grant_id: code_hash,
            client_id: app.client_id.clone(),
            user_id: user.id,
            auth_time: grant.auth_time,
        },
        grant.scope,
        grant.nonce.as_deref(),
        refuse,
    )
    .await
}

/// The user a grant is for, if they still exist and are neither disabled nor locked.
async fn active_user(
    state: &ApiState,
    user_id: i64,
    now: i64,
    refuse: &Refuse<'_>,
) -> Result<UserRow, TokenError> {
    let Some(user) = state.store.user_by_id(user_id).await? else {
        return Err(refuse
            .with("invalid_grant", "the user no longer exists".into())
            .await);
    };
    if !user.is_active() {
        return Err(refuse
            .with(
                "invalid_grant",
                format!("the account '{}' is disabled", user.username),
            )
            .await);
    }
    if state
        .store
        .login_locked_until(user.id, now)
        .await?
        .is_some()
    {
        return Err(refuse
            .with(
                "invalid_grant",
                format!("the account '{}' is locked", user.username),
            )
            .await);
    }
    Ok(user)
}

/// The scope a refresh asks for: the grant's, or a part of it (RFC 6749 §6).
fn narrowed_scope(granted: &str, requested: Option<&str>) -> Result<String, String> {
    let Some(requested) = requested.filter(|r| !r.trim().is_empty()) else {
        return Ok(granted.to_string());
    };
    let granted: Vec<&str> = granted.split_whitespace().collect();
    let requested: Vec<&str> = requested.split_whitespace().collect();
    if let Some(extra) = requested.iter().find(|s| !granted.contains(s)) {
        return Err(format!(
            "scope '{extra}' was not granted: a refresh may only narrow the scope ({})",
            granted.join(" ")
        ));
    }
    if !requested.contains(&"openid") {
        return Err("scope must contain 'openid' (this is an OpenID Connect provider)".into());
    }
    // In the provider's order, so equal scopes read the same.
    Ok(SCOPES
        .iter()
        .filter(|s| requested.contains(s))
        .copied()
        .collect::<Vec<_>>()
        .join(" "))
}

async fn exchange_refresh(
    state: &ApiState,
    app: &AppRow,
    req: &TokenRequest,
    refuse: &Refuse<'_>,
) -> Result<TokenResponse, TokenError> {
    let Some(token) = req.refresh_token.as_deref().filter(|t| !t.is_empty()) else {
        return Err(refuse
            .with("invalid_request", "refresh_token is missing".into())
            .await);
    };
    let now = lotus_device::now_ms();
    let hash = crate::auth::token_hash(token);
    let unknown = "the refresh token is unknown, expired or revoked: sign the user in again";
    let Some(found) = state.store.oidc_refresh_token(&hash, now).await? else {
        return Err(refuse.with("invalid_grant", unknown.into()).await);
    };
    // Another client's token is treated as unknown: it neither works nor gets spent.
    if found.client_id != app.client_id {
        return Err(refuse.with("invalid_grant", unknown.into()).await);
    }
    let replayed = async || -> TokenError {
        let grant = OidcGrant {
            grant_id: found.grant_id.clone(),
            client_id: found.client_id.clone(),
            user_id: found.user_id,
            auth_time: found.auth_time,
        };
        let revoked = match state.store.revoke_oidc_grant(&grant, now).await {
            Ok(n) => n,
            Err(e) => return e.into(),
        };
        tracing::warn!(app = %app.client_id, user_id = found.user_id, revoked,
            "a spent refresh token was presented again: its grant is revoked");
        crate::audit::record(
            state,
            &app.client_id,
            "oidc.revoke",
            &format!("app:{}", app.client_id),
            "ok",
            json!({"reason": "refresh token reused", "userId": found.user_id, "tokens": revoked}),
        )
        .await;
        refuse
            .with(
                "invalid_grant",
                "the refresh token was already used: every token of this sign-in is revoked; \
                 sign the user in again"
                    .into(),
            )
            .await
    };
    if found.used_at.is_some() {
        return Err(replayed().await);
    }
    let scope = match narrowed_scope(&found.scope, req.scope.as_deref()) {
        Ok(s) => s,
        Err(reason) => return Err(refuse.with("invalid_scope", reason).await),
    };
    if !state.store.spend_oidc_refresh_token(&hash, now).await? {
        // Another request spent it between the look-up and now: one of the two is a replay.
        return Err(replayed().await);
    }
    let user = active_user(state, found.user_id, now, refuse).await?;
    issue(
        state,
        app,
        &user,
        &OidcGrant {
            grant_id: found.grant_id.clone(),
            client_id: app.client_id.clone(),
            user_id: user.id,
            auth_time: found.auth_time,
        },
        scope,
        // OpenID Connect Core §12.2: an ID token from a refresh carries no nonce.
        None,
        refuse,
    )
    .await
}

/// Signs an ID token and issues an access token (and a refresh token with `offline_access`)
/// under `grant`.
async fn issue(
    state: &ApiState,
    app: &AppRow,
    user: &UserRow,
    grant: &OidcGrant,
    scope: String,
    nonce: Option<&str>,
    refuse: &Refuse<'_>,
) -> Result<TokenResponse, TokenError> {
    let now = lotus_device::now_ms();
    let key = state.oidc.keys.active(&state.store).await?;
    let iat = now / 1000;
    let id_token = key.sign(&IdTokenClaims {
        iss: state.oidc.issuer(),
        sub: user.id.to_string(),
        aud: &app.client_id,
        exp: iat + TOKEN_TTL_SECS,
        iat,
        auth_time: grant.auth_time / 1000,
        nonce,
        user: {
            let mut c = user_claims(user, &scope);
            c.remove("sub");
            c
        },
    })?;
    let access_token = random_token();
    let refresh_token = scope
        .split_whitespace()
        .any(|s| s == OFFLINE_ACCESS)
        .then(random_token);
    let refresh_row = OidcRefreshToken {
        grant_id: grant.grant_id.clone(),
        client_id: app.client_id.clone(),
        user_id: user.id,
        scope: scope.clone(),
        expires_at: now + REFRESH_TTL_MS,
        used_at: None,
        auth_time: grant.auth_time,
    };
    let refresh_hash = refresh_token.as_deref().map(crate::auth::token_hash);
    let issued = state
        .store
        .issue_oidc_tokens(
            grant,
            &crate::auth::token_hash(&access_token),
            &OidcAccessToken {
                client_id: app.client_id.clone(),
                user_id: user.id,
                scope: scope.clone(),
                expires_at: now + TOKEN_TTL_SECS * 1000,
                grant_id: Some(grant.grant_id.clone()),
            },
            refresh_hash.as_deref().map(|h| (h, &refresh_row)),
        )
        .await?;
    if !issued {
        return Err(refuse
            .with(
                "invalid_grant",
                "this sign-in has been revoked: sign the user in again".into(),
            )
            .await);
    }
    tracing::info!(user = %user.username, app = %app.client_id, kid = %key.kid,
        refresh = refresh_token.is_some(), "tokens issued");
    crate::audit::record(
        state,
        &app.client_id,
        "oidc.token",
        &format!("user:{}", user.username),
        "ok",
        json!({"scope": scope, "kid": key.kid, "refreshToken": refresh_token.is_some()}),
    )
    .await;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_in: TOKEN_TTL_SECS,
        id_token,
        refresh_token,
        scope,
    })
}

/// A refusal at the UserInfo endpoint (RFC 6750 §3).
fn invalid_token(description: &str) -> Response {
    let challenge = format!(
        "Bearer error=\"invalid_token\", error_description=\"{}\"",
        description.replace('"', "'")
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        axum::Json(OAuthError {
            error: "invalid_token".into(),
            error_description: description.into(),
        }),
    )
        .into_response()
}

/// The UserInfo endpoint: the claims of the user an access token was issued for, as far as
/// its scope reveals them.
#[utoipa::path(get, path = "/oauth2/userinfo", tag = "openid connect",
    security(("bearer" = [])),
    responses((status = 200, description = "sub, preferred_username, roles; name and email by scope", body = Object),
        (status = 401, description = "missing, unknown or expired access token", body = OAuthError)))]
pub async fn userinfo(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return invalid_token("send the access token as 'Authorization: Bearer <access_token>'");
    };
    match userinfo_claims(&state, token.trim()).await {
        Ok(Some(claims)) => {
            ([(header::CACHE_CONTROL, "no-store")], axum::Json(claims)).into_response()
        }
        Ok(None) => invalid_token("the access token is unknown, expired or revoked"),
        Err(e) => e.into_response(),
    }
}

async fn userinfo_claims(state: &ApiState, token: &str) -> ApiResult<Option<Map<String, Value>>> {
    let now = lotus_device::now_ms();
    let Some(grant) = state
        .store
        .oidc_access_token(&crate::auth::token_hash(token), now)
        .await?
    else {
        return Ok(None);
    };
    // A token outlives neither its app's registration nor its being online.
    let app_online = state
        .store
        .app_by_client_id(&grant.client_id)
        .await?
        .is_some_and(|a| a.is_online());
    if !app_online {
        return Ok(None);
    }
    Ok(state
        .store
        .user_by_id(grant.user_id)
        .await?
        .filter(UserRow::is_active)
        .map(|u| user_claims(&u, &grant.scope)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_added_to_the_redirect_uri() {
        assert_eq!(
            with_params(
                "https://app.example/cb",
                &[("code", "a b"), ("state", "x&y")]
            ),
            "https://app.example/cb?code=a+b&state=x%26y"
        );
        assert_eq!(
            with_params("https://app.example/cb?tenant=1", &[("code", "c")]),
            "https://app.example/cb?tenant=1&code=c"
        );
    }

    #[test]
    fn pkce_values_follow_rfc_7636() {
        assert!(pkce_syntax("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert!(!pkce_syntax("short"));
        assert!(!pkce_syntax(&"a".repeat(129)));
        assert!(!pkce_syntax(&format!("{}=", "a".repeat(43))));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let raw = base64::engine::general_purpose::STANDARD.encode("app%3A1:s%2Bc+r%25t");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {raw}").parse().unwrap(),
        );
        let (id, secret) = basic_credentials(&headers).ok().flatten().unwrap();
        assert_eq!(id, "app:1");
        assert_eq!(secret, "s+c r%t");
        headers.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(basic_credentials(&headers).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert!(basic_credentials(&headers).ok().flatten().is_none());
    }
}
