//! Log-in through the city's own OpenID Connect provider (Lotus as a relying party).
//!
//! `start` sends the browser to the provider with `state`, `nonce` and a PKCE S256 challenge
//! (kept in the database for ten minutes, single use, so any node can take the callback);
//! `callback` exchanges the code, checks the ID token (signature against the provider's JWKS,
//! `iss`, `aud`, `exp`, `nonce`), finds the Lotus user the configured claim names, opens an
//! ordinary session and hands its token to the portal in the URL fragment, which never reaches
//! a server's logs. Nobody gets an account this way: an administrator creates it first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lotus_storage::{OidcLoginState, Secret};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{constant_time_eq, error_page, found, random_token, s256};
use crate::ApiState;
use crate::problem::{ApiError, ApiResult, Json, Query};

/// How long a started log-in may take at the provider.
const STATE_TTL_MS: i64 = 10 * 60 * 1000;

/// How long the provider's metadata and keys are trusted before they are fetched again.
const CACHE_FOR: Duration = Duration::from_secs(3600);

/// A token signed with a key id the cached JWKS lacks refetches it, at most this often (the
/// provider rotated; a stream of forged kids must not turn into a stream of fetches).
const REFETCH_AFTER: Duration = Duration::from_secs(10);

/// Clock difference allowed on `exp`, `iat` and `nbf`.
const LEEWAY_SECS: u64 = 60;

/// Signature algorithms accepted on ID tokens: asymmetric only (never `none` or a shared
/// secret that would let anyone holding the client secret mint tokens).
const ACCEPTED_ALGS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// `[auth.oidc]`: the city's provider.
#[derive(Debug, Clone)]
pub struct ExternalProvider {
    /// The provider's issuer URL; its metadata is at `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Where the provider sends the browser back (default
    /// `{public_url}/api/v1/auth/oidc/callback`); register it with the provider.
    pub redirect_url: Option<String>,
    /// The claim holding the Lotus username (default `preferred_username`).
    pub username_claim: String,
    /// The text of the portal's log-in button.
    pub label: String,
    /// Scopes asked for (must contain `openid`).
    pub scopes: String,
}

/// The provider's metadata, as far as the log-in uses it.
#[derive(Debug, Clone, Deserialize)]
struct ProviderMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

type Cached<T> = tokio::sync::Mutex<Option<(Instant, T)>>;

/// The relying party: its configuration and what it has learnt of the provider.
pub struct RelyingParty {
    config: Option<ExternalProvider>,
    redirect_url: String,
    http: reqwest::Client,
    metadata: Cached<Arc<ProviderMetadata>>,
    keys: Cached<Arc<JwkSet>>,
}

/// Why a log-in failed: an HTTP status and a sentence for the person logging in.
type LoginError = ApiError;

fn bad_gateway(detail: String) -> LoginError {
    ApiError::new(StatusCode::BAD_GATEWAY, detail)
}

impl RelyingParty {
    pub fn new(config: Option<ExternalProvider>, public_url: &str) -> Self {
        let redirect_url = config
            .as_ref()
            .and_then(|c| c.redirect_url.clone())
            .unwrap_or_else(|| format!("{public_url}/api/v1/auth/oidc/callback"));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // A provider that redirects its token endpoint would get the client secret along.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        RelyingParty {
            config,
            redirect_url,
            http,
            metadata: Default::default(),
            keys: Default::default(),
        }
    }

    fn config(&self) -> ApiResult<&ExternalProvider> {
        self.config.as_ref().ok_or_else(|| {
            ApiError::not_found(
                "log-in through an external provider is not configured on this node: set \
                 [auth.oidc] issuer, client_id and client_secret",
            )
        })
    }

    async fn get_json(&self, what: &str, url: &str) -> Result<Value, LoginError> {
        let resp = self.http.get(url).send().await.map_err(|e| {
            bad_gateway(format!(
                "cannot reach the identity provider for its {what} at {url}: {e}"
            ))
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(bad_gateway(format!(
                "the identity provider answered {status} for its {what} at {url}"
            )));
        }
        resp.json().await.map_err(|e| {
            bad_gateway(format!(
                "the identity provider's {what} at {url} is not JSON: {e}"
            ))
        })
    }

    /// The provider's metadata, fetched on first use and again after an hour.
    async fn metadata(&self) -> Result<Arc<ProviderMetadata>, LoginError> {
        let config = self.config()?;
        let mut cached = self.metadata.lock().await;
        if let Some((at, m)) = cached.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return Ok(m.clone());
        }
        let issuer = config.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let doc = self.get_json("discovery document", &url).await?;
        let m: ProviderMetadata = serde_json::from_value(doc).map_err(|e| {
            bad_gateway(format!(
                "the discovery document at {url} lacks what a log-in needs: {e}"
            ))
        })?;
        // OpenID Connect Discovery §4.3: a document for another issuer must not be used.
        if m.issuer.trim_end_matches('/') != issuer {
            return Err(bad_gateway(format!(
                "the discovery document at {url} names issuer '{}', not the configured '{}': \
                 fix [auth.oidc] issuer",
                m.issuer, config.issuer
            )));
        }
        let m = Arc::new(m);
        *cached = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    /// The provider's keys; fetched again when a token names a key id they lack.
    async fn key_for(
        &self,
        metadata: &ProviderMetadata,
        kid: Option<&str>,
    ) -> Result<DecodingKey, LoginError> {
        let mut cached = self.keys.lock().await;
        for attempt in 0..2 {
            let stale = match cached.as_ref() {
                None => true,
                Some((at, set)) => {
                    at.elapsed() >= CACHE_FOR
                        || (attempt == 1
                            && find(set, kid).is_none()
                            && at.elapsed() >= REFETCH_AFTER)
                }
            };
            if stale {
                let doc = self.get_json("keys", &metadata.jwks_uri).await?;
                let set: JwkSet = serde_json::from_value(doc).map_err(|e| {
                    bad_gateway(format!(
                        "the JWKS at {} is not a JWK Set: {e}",
                        metadata.jwks_uri
                    ))
                })?;
                *cached = Some((Instant::now(), Arc::new(set)));
            }
            if let Some((_, set)) = cached.as_ref()
                && let Some(jwk) = find(set, kid)
            {
                return DecodingKey::from_jwk(jwk).map_err(|e| {
                    bad_gateway(format!(
                        "the identity provider's key {kid:?} cannot be used: {e}"
                    ))
                });
            }
        }
        Err(ApiError::unauthorized(format!(
            "the ID token is signed with key {kid:?}, which the identity provider does not publish"
        )))
    }
}

/// The key a token names, or the only key when it names none.
fn find<'a>(set: &'a JwkSet, kid: Option<&str>) -> Option<&'a jsonwebtoken::jwk::Jwk> {
    match kid {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
}

/// Whether the portal shows the button.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcLoginStatus {
    pub enabled: bool,
    /// The button's text; empty: the portal's own, in the user's language.
    pub label: String,
    /// Where the button goes (add `?redirect=/path` to come back to a portal page).
    pub start_url: String,
}

/// Whether log-in through the city's identity provider is offered, and the button's text.
#[utoipa::path(get, path = "/api/v1/auth/oidc", tag = "auth",
    responses((status = 200, body = OidcLoginStatus)))]
pub async fn status(State(state): State<ApiState>) -> Json<OidcLoginStatus> {
    let config = state.oidc.login.config.as_ref();
    Json(OidcLoginStatus {
        enabled: config.is_some(),
        label: config.map(|c| c.label.clone()).unwrap_or_default(),
        start_url: "/api/v1/auth/oidc/start".into(),
    })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartQuery {
    /// The portal path to open once logged in (default `/`).
    pub redirect: Option<String>,
}

/// A portal path that stays on this origin (`/x`, never `//host` or `/\host`).
fn local_path(p: Option<&str>) -> String {
    match p {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.into(),
        _ => "/".into(),
    }
}

/// Starts a log-in through the city's identity provider: a redirect to its authorization
/// endpoint with `state`, `nonce` and a PKCE S256 challenge.
#[utoipa::path(get, path = "/api/v1/auth/oidc/start", tag = "auth", params(StartQuery),
    responses((status = 302, description = "to the identity provider"),
        (status = 404, description = "not configured", body = crate::problem::Problem),
        (status = 502, description = "the provider cannot be reached", body = crate::problem::Problem)))]
pub async fn start(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
) -> Response {
    match begin(&state, q.redirect.as_deref()).await {
        Ok(location) => found(&location),
        Err(e) => error_page(&headers, e),
    }
}

async fn begin(state: &ApiState, redirect: Option<&str>) -> Result<String, LoginError> {
    let rp = &state.oidc.login;
    let config = rp.config()?;
    let metadata = rp.metadata().await?;
    let (login_state, nonce, verifier) = (random_token(), random_token(), random_token());
    state
        .store
        .create_oidc_login_state(
            &crate::auth::token_hash(&login_state),
            &OidcLoginState {
                nonce: nonce.clone(),
                verifier: Secret::new(verifier.clone()),
                return_to: local_path(redirect),
                expires_at: lotus_device::now_ms() + STATE_TTL_MS,
            },
        )
        .await?;
    let mut url = reqwest::Url::parse(&metadata.authorization_endpoint).map_err(|e| {
        bad_gateway(format!(
            "the identity provider's authorization endpoint '{}' is not a URL: {e}",
            metadata.authorization_endpoint
        ))
    })?;
    url.query_pairs_mut().extend_pairs([
        ("response_type", "code"),
        ("client_id", config.client_id.as_str()),
        ("redirect_uri", rp.redirect_url.as_str()),
        ("scope", config.scopes.as_str()),
        ("state", login_state.as_str()),
        ("nonce", nonce.as_str()),
        ("code_challenge", s256(&verifier).as_str()),
        ("code_challenge_method", "S256"),
    ]);
    Ok(url.to_string())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by the provider when it refused.
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// RFC 9207: the issuer that answered.
    pub iss: Option<String>,
}

/// Where the identity provider sends the browser back. On success: a new session, and a
/// redirect to the portal's log-in page with the token in the URL fragment. A user the
/// provider knows but Lotus does not gets a 403 that says so.
#[utoipa::path(get, path = "/api/v1/auth/oidc/callback", tag = "auth", params(CallbackQuery),
    responses((status = 302, description = "to the portal with the session in the fragment"),
        (status = 400, description = "unknown or expired state", body = crate::problem::Problem),
        (status = 401, description = "the provider refused or the ID token is not valid", body = crate::problem::Problem),
        (status = 403, description = "no Lotus account for this user, or the account is locked", body = crate::problem::Problem)))]
pub async fn callback(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    match finish(&state, q).await {
        Ok(location) => found(&location),
        Err(e) => error_page(&headers, e),
    }
}

async fn finish(state: &ApiState, q: CallbackQuery) -> Result<String, LoginError> {
    let rp = &state.oidc.login;
    let config = rp.config()?;
    let now = lotus_device::now_ms();
    let Some(login_state) = q.state.as_deref().filter(|s| !s.is_empty()) else {
        return Err(ApiError::bad_request(
            "the identity provider sent no state back: start the log-in again",
        ));
    };
    let Some(started) = state
        .store
        .take_oidc_login_state(&crate::auth::token_hash(login_state), now)
        .await?
    else {
        return Err(ApiError::bad_request(
            "this log-in is unknown, expired or already finished: start the log-in again",
        ));
    };
    if let Some(error) = q.error.as_deref() {
        let why = q.error_description.as_deref().unwrap_or("no reason given");
        return Err(ApiError::unauthorized(format!(
            "the identity provider refused the log-in ({error}): {why}"
        )));
    }
    if let Some(iss) = q.iss.as_deref()
        && iss.trim_end_matches('/') != config.issuer.trim_end_matches('/')
    {
        return Err(ApiError::bad_request(format!(
            "the answer came from issuer '{iss}', not from the configured '{}'",
            config.issuer
        )));
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        return Err(ApiError::bad_request(
            "the identity provider sent no code back: start the log-in again",
        ));
    };
    let metadata = rp.metadata().await?;
    let tokens = redeem(rp, config, &metadata, code, started.verifier.expose()).await?;
    let claims = verify_id_token(rp, config, &metadata, &tokens.id_token, &started.nonce).await?;
    let username = match claims.get(&config.username_claim) {
        Some(Value::String(name)) => name.clone(),
        _ => userinfo_claim(rp, config, &metadata, &tokens.access_token, &claims).await?,
    };
    let issuer = config.issuer.as_str();
    let Some(user) = state.store.user_by_name(&username).await? else {
        tracing::warn!(username = %username, issuer, "external log-in of a user without a Lotus account");
        crate::audit::record(
            state,
            &username,
            "auth.login",
            &format!("user:{username}"),
            "denied",
            json!({"method": "oidc", "issuer": issuer, "reason": "no account"}),
        )
        .await;
        return Err(ApiError::forbidden(format!(
            "no Lotus account for '{username}' (claim '{}' of {issuer}): ask an administrator \
             to create one",
            config.username_claim
        )));
    };
    if !user.is_active() {
        // The city's provider vouched for the person, but their Lotus account is disabled.
        crate::audit::record(
            state,
            &user.username,
            "auth.login",
            &format!("user:{}", user.username),
            "denied",
            json!({"method": "oidc", "issuer": issuer, "reason": "disabled"}),
        )
        .await;
        return Err(crate::auth::disabled());
    }
    if let Some(until) = state.store.login_locked_until(user.id, now).await? {
        crate::audit::record(
            state,
            &user.username,
            "auth.login",
            &format!("user:{}", user.username),
            "denied",
            json!({"method": "oidc", "issuer": issuer, "reason": "locked", "lockedUntil": until}),
        )
        .await;
        return Err(crate::auth::locked(&state.lockout, until, now));
    }
    let token = random_token();
    let expires_at = now + state.session_ttl_ms;
    state
        .store
        .create_session(&crate::auth::token_hash(&token), user.id, expires_at)
        .await?;
    tracing::info!(username = %user.username, issuer, "log-in through the identity provider");
    crate::audit::record(
        state,
        &user.username,
        "auth.login",
        &format!("user:{}", user.username),
        "ok",
        json!({"method": "oidc", "issuer": issuer}),
    )
    .await;
    let mut fragment = reqwest::Url::parse("http://portal/").expect("a valid URL");
    fragment.query_pairs_mut().extend_pairs([
        ("token", token.as_str()),
        ("expiresAt", expires_at.to_string().as_str()),
        ("username", user.username.as_str()),
        ("roles", user.roles.join(",").as_str()),
        ("redirect", started.return_to.as_str()),
    ]);
    Ok(format!("/login#{}", fragment.query().unwrap_or_default()))
}

/// What the token endpoint answered.
#[derive(Deserialize)]
struct Tokens {
    id_token: String,
    #[serde(default)]
    access_token: String,
}

/// `application/x-www-form-urlencoded` of one value, as HTTP Basic client credentials need
/// (RFC 6749 §2.3.1).
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn redeem(
    rp: &RelyingParty,
    config: &ExternalProvider,
    metadata: &ProviderMetadata,
    code: &str,
    verifier: &str,
) -> Result<Tokens, LoginError> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", rp.redirect_url.as_str()),
        ("code_verifier", verifier),
    ];
    // client_secret_basic unless the provider says it takes only client_secret_post.
    let basic = metadata
        .token_endpoint_auth_methods_supported
        .as_ref()
        .is_none_or(|m| m.iter().any(|m| m == "client_secret_basic"));
    let mut req = rp.http.post(&metadata.token_endpoint);
    if basic {
        let credentials = format!(
            "{}:{}",
            form_encode(&config.client_id),
            form_encode(config.client_secret.expose())
        );
        req = req.header(
            reqwest::header::AUTHORIZATION,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
        );
    } else {
        form.push(("client_id", config.client_id.as_str()));
        form.push(("client_secret", config.client_secret.expose()));
    }
    let resp = req.form(&form).send().await.map_err(|e| {
        bad_gateway(format!(
            "cannot reach the identity provider's token endpoint {}: {e}",
            metadata.token_endpoint
        ))
    })?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let error = body["error"].as_str().unwrap_or("no error code");
        let why = body["error_description"].as_str().unwrap_or("");
        tracing::warn!(%status, error, why, "the identity provider refused the code");
        return Err(if error == "invalid_client" {
            bad_gateway(format!(
                "the identity provider does not accept this node's client credentials ({error}: \
                 {why}): check [auth.oidc] client_id and client_secret"
            ))
        } else {
            ApiError::unauthorized(format!(
                "the identity provider refused the code ({error}: {why}): start the log-in again"
            ))
        });
    }
    serde_json::from_value(body).map_err(|e| {
        bad_gateway(format!(
            "the identity provider's token response has no id_token: {e}"
        ))
    })
}

async fn verify_id_token(
    rp: &RelyingParty,
    config: &ExternalProvider,
    metadata: &ProviderMetadata,
    id_token: &str,
    nonce: &str,
) -> Result<Map<String, Value>, LoginError> {
    let invalid = |why: String| ApiError::unauthorized(format!("the ID token is not valid: {why}"));
    let header = jsonwebtoken::decode_header(id_token).map_err(|e| invalid(e.to_string()))?;
    if !ACCEPTED_ALGS.contains(&header.alg) {
        return Err(invalid(format!(
            "it is signed with {:?}; only asymmetric algorithms are accepted",
            header.alg
        )));
    }
    let key = rp.key_for(metadata, header.kid.as_deref()).await?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[metadata.issuer.as_str()]);
    validation.set_audience(&[config.client_id.as_str()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.leeway = LEEWAY_SECS;
    let data = jsonwebtoken::decode::<Map<String, Value>>(id_token, &key, &validation)
        .map_err(|e| invalid(e.to_string()))?;
    let claims = data.claims;
    // OpenID Connect Core §3.1.3.7: with several audiences, azp must be this client.
    if claims["aud"].as_array().is_some_and(|a| a.len() > 1)
        && claims.get("azp").and_then(Value::as_str) != Some(config.client_id.as_str())
    {
        return Err(invalid(
            "it is meant for several clients and azp is not this one".into(),
        ));
    }
    match claims.get("nonce").and_then(Value::as_str) {
        Some(n) if constant_time_eq(n, nonce) => Ok(claims),
        Some(_) => Err(invalid("its nonce is not the one this log-in sent".into())),
        None => Err(invalid("it carries no nonce".into())),
    }
}

/// The username claim from the UserInfo endpoint, for providers that leave it out of the ID
/// token.
async fn userinfo_claim(
    rp: &RelyingParty,
    config: &ExternalProvider,
    metadata: &ProviderMetadata,
    access_token: &str,
    id_claims: &Map<String, Value>,
) -> Result<String, LoginError> {
    let missing = || {
        ApiError::forbidden(format!(
            "the identity provider did not say who you are: its answer has no '{}' claim; set \
             [auth.oidc] username_claim to the claim that holds the Lotus username",
            config.username_claim
        ))
    };
    let (Some(url), false) = (
        metadata.userinfo_endpoint.as_deref(),
        access_token.is_empty(),
    ) else {
        return Err(missing());
    };
    let resp = rp
        .http
        .get(url)
        .bearer_auth(access_token)
        .send()
        .await
        .map_err(|e| {
            bad_gateway(format!(
                "cannot reach the identity provider's userinfo endpoint {url}: {e}"
            ))
        })?;
    if !resp.status().is_success() {
        return Err(bad_gateway(format!(
            "the identity provider's userinfo endpoint {url} answered {}",
            resp.status()
        )));
    }
    let info: Map<String, Value> = resp.json().await.map_err(|e| {
        bad_gateway(format!(
            "the identity provider's userinfo at {url} is not a JSON object: {e}"
        ))
    })?;
    // OpenID Connect Core §5.3.2: UserInfo of another subject must not be used.
    if info.get("sub") != id_claims.get("sub") {
        return Err(bad_gateway(
            "the identity provider's userinfo names another subject than the ID token".into(),
        ));
    }
    match info.get(&config.username_claim) {
        Some(Value::String(name)) => Ok(name.clone()),
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_log_in() {
        assert_eq!(local_path(Some("/authorize?x=1")), "/authorize?x=1");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn basic_credentials_are_form_encoded() {
        assert_eq!(form_encode("app_1"), "app_1");
        assert_eq!(form_encode("a:b c%"), "a%3Ab+c%25");
    }
}
