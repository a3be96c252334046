//! CORS for the provider's endpoints that a browser app calls itself (discovery, JWKS, token,
//! userinfo, revocation). An origin is allowed when it is the origin of a redirect URI some
//! registered app has: the registry already says which web origins are the apps'. Other
//! origins get no `Access-Control-Allow-Origin`, so browsers keep their pages from reading the
//! answers. No credentials are allowed: the endpoints take client secrets and bearer tokens,
//! never cookies.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::ApiState;

/// What a preflight allows (the endpoints' methods and the headers their clients send).
const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
const ALLOW_HEADERS: &str = "Authorization, Content-Type";
/// How long a browser may cache a preflight: short, so that removing an app's redirect URI
/// takes effect soon.
const MAX_AGE_SECS: &str = "600";

/// The answer to a preflight `OPTIONS`; [`registered_origins`] adds the CORS headers when the
/// origin is allowed.
pub async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// The origin (`scheme://host[:port]`) of a URL, as browsers send it in `Origin`.
fn origin_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

async fn allowed(state: &ApiState, origin: &str) -> bool {
    match state.store.oidc_redirect_uris().await {
        Ok(uris) => uris
            .iter()
            .any(|u| origin_of(u).is_some_and(|o| o == origin)),
        Err(e) => {
            // Failing closed only costs a browser app one request.
            tracing::warn!(error = %e, "could not read the registered redirect URIs for CORS");
            false
        }
    }
}

/// Adds CORS headers for allowed origins, to answers and to preflights.
pub async fn registered_origins(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let preflight = req.method() == Method::OPTIONS;
    let mut resp = next.run(req).await;
    // The answer depends on the Origin: caches (the discovery document is cacheable) must
    // not hand one origin's answer to another.
    resp.headers_mut()
        .append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin else {
        return resp;
    };
    if !allowed(&state, &origin).await {
        return resp;
    }
    let Ok(value) = HeaderValue::from_str(&origin) else {
        return resp;
    };
    let headers = resp.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    if preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_SECS),
        );
    } else {
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("WWW-Authenticate"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_non_default_port() {
        assert_eq!(
            origin_of("https://App.example/oidc/cb?x=1").as_deref(),
            Some("https://app.example")
        );
        assert_eq!(
            origin_of("https://app.example:443/cb").as_deref(),
            Some("https://app.example")
        );
        assert_eq!(
            origin_of("http://localhost:5173/cb").as_deref(),
            Some("http://localhost:5173")
        );
        assert_eq!(origin_of("not a url"), None);
    }
}
