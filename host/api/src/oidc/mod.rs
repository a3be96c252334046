//! OpenID Connect, both ways.
//!
//! - **Provider** ([`provider`]): apps registered in the app registry sign their users in with
//!   Lotus (authorization code + PKCE S256). The portal holds a bearer token, not a cookie, so
//!   `GET /oauth2/authorize` only validates the request and sends the browser to the portal's
//!   `/authorize` page; that page (after a log-in if needed) calls
//!   `POST /api/v1/oauth2/authorize`, where the `lotus.api` policy decides `app.open`.
//!   Refresh tokens rotate; a code or refresh token presented twice revokes its grant.
//! - **Revocation** ([`revocation`], RFC 7009) and **RP-initiated logout** ([`logout`]).
//! - **Re-authentication** ([`reauth`]) for `prompt=login` and `max_age`.
//! - **CORS** ([`cors`]) on the endpoints a browser app calls, for the origins of registered
//!   redirect URIs.
//! - **App center** ([`app_center`]): the apps the caller may open.
//! - **Relying party** ([`login`]): operators log in through the city's own provider.
//!
//! Signing keys ([`keys`]) are P-256 (ES256), sealed with the master key in the database.

pub mod app_center;
pub mod cors;
pub mod keys;
pub mod login;
pub mod logout;
pub mod provider;
pub(crate) mod reauth;
pub mod revocation;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use lotus_storage::UserRow;
use rand::RngCore;
use sha2::{Digest, Sha256};
use utoipa::OpenApi;

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult};

/// How the node speaks OpenID Connect; set by the binary from its configuration.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The node's public base URL (`http://host:port`, no trailing slash): the provider's
    /// issuer, and the base of every URL it publishes.
    pub issuer: String,
    /// Log-in through an external provider; `None` hides the button.
    pub login: Option<login::ExternalProvider>,
    /// How long a retired signing key stays in the JWKS before it is deleted.
    pub key_retention: std::time::Duration,
}

impl Default for OidcSettings {
    fn default() -> Self {
        OidcSettings {
            issuer: "http://localhost:8080".into(),
            login: None,
            key_retention: keys::DEFAULT_RETENTION,
        }
    }
}

/// The running OpenID Connect parts of the API.
pub struct Oidc {
    pub settings: OidcSettings,
    pub keys: keys::KeyRing,
    pub login: login::RelyingParty,
}

impl Oidc {
    pub fn new(mut settings: OidcSettings) -> Self {
        settings.issuer = settings.issuer.trim_end_matches('/').to_string();
        let login = login::RelyingParty::new(settings.login.clone(), &settings.issuer);
        Oidc {
            settings,
            keys: keys::KeyRing::default(),
            login,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }
}

impl Default for Oidc {
    fn default() -> Self {
        Oidc::new(OidcSettings::default())
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(
        provider::discovery, provider::jwks, provider::authorize, provider::authorize_as_user,
        provider::login_required, provider::token, provider::userinfo, revocation::revoke,
        logout::logout, logout::end_session, keys::rotate, app_center::my_apps,
        login::status, login::start, login::callback,
    ),
    tags(
        (name = "openid connect", description = "Lotus as an OpenID Connect provider for registered apps (authorization code + PKCE)"),
        (name = "app center", description = "The apps a user may open, with single sign-on"),
    )
)]
pub struct OidcDoc;

/// The provider's, the app center's and the external log-in's routes. `state` is what the
/// CORS layer of the browser-facing endpoints reads registered origins from.
pub fn routes(state: ApiState) -> Router<ApiState> {
    // The endpoints a browser app calls itself (RFC 8252 / OAuth for browser-based apps):
    // CORS for the origins of registered redirect URIs, preflight included.
    let browser_facing = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(provider::discovery).options(cors::preflight),
        )
        .route("/oauth2/jwks", get(provider::jwks).options(cors::preflight))
        .route(
            "/oauth2/token",
            post(provider::token).options(cors::preflight),
        )
        .route(
            "/oauth2/userinfo",
            get(provider::userinfo)
                .post(provider::userinfo)
                .options(cors::preflight),
        )
        .route(
            "/oauth2/revoke",
            post(revocation::revoke).options(cors::preflight),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            cors::registered_origins,
        ));
    Router::new()
        .merge(browser_facing)
        .route("/oauth2/authorize", get(provider::authorize))
        .route("/oauth2/logout", get(logout::logout))
        .route(
            "/api/v1/oauth2/authorize",
            post(provider::authorize_as_user),
        )
        .route(
            "/api/v1/oauth2/authorize/login-required",
            post(provider::login_required),
        )
        .route("/api/v1/oauth2/end-session", post(logout::end_session))
        .route("/api/v1/oauth2/keys/rotate", post(keys::rotate))
        .route("/api/v1/me/apps", get(app_center::my_apps))
        .route("/api/v1/auth/oidc", get(login::status))
        .route("/api/v1/auth/oidc/start", get(login::start))
        .route("/api/v1/auth/oidc/callback", get(login::callback))
}

/// The logged-in user behind a request; apps have no app center and sign nobody in.
pub(crate) fn session_user(caller: &Authenticated) -> ApiResult<&UserRow> {
    caller.person().ok_or_else(|| {
        ApiError::forbidden(
            "apps have no app center and sign nobody in: this route is for logged-in users",
        )
    })
}

/// 32 random bytes, base64url without padding (43 characters): codes, tokens, states, nonces
/// and PKCE verifiers.
pub(crate) fn random_token() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub(crate) fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Equality that takes the same time wherever the inputs differ (secrets, PKCE challenges).
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    // Comparing digests makes the lengths equal, so not even the length leaks.
    lotus_device::connect::constant_time_eq(
        &Sha256::digest(a.as_bytes()),
        &Sha256::digest(b.as_bytes()),
    )
}

/// Whether a browser navigated here (it gets a page; API clients get problem+json).
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// An error a person sees: a small HTML page for a browser, a problem for anything else.
pub(crate) fn error_page(headers: &HeaderMap, error: ApiError) -> Response {
    if !wants_html(headers) {
        return error.into_response();
    }
    let title = error.status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;line-height:1.5}}</style>\
         </head><body>\n<h1>{title}</h1>\n<p data-test=\"oidc-error\">{}</p>\n\
         <p><a href=\"/login\">Back to the log-in page</a></p>\n</body></html>\n",
        escape_html(&error.detail)
    );
    (
        error.status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A 302 to `location`, never cached (it carries one-time codes and tokens).
pub(crate) fn found(location: &str) -> Response {
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location.to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq("secret", "secret"));
        assert!(!constant_time_eq("secret", "secreT"));
        assert!(!constant_time_eq("secret", "secret-longer"));
        assert!(!constant_time_eq("", "x"));
    }

    #[test]
    fn error_pages_escape_the_detail() {
        assert_eq!(
            escape_html("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
