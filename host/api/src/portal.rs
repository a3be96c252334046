//! The operators' portal: the built single-page app (`portal/dist`) served at `/`, as the
//! router's fallback, so every API route keeps its own answer.
//!
//! A file that exists is served (compressed when the client accepts it, or from a `.br`/`.gz`
//! twin the build made). Any other GET outside the node's own prefixes serves `index.html`, so
//! the app's history routing (`/devices/abc`) works on reload; a missing file under `/assets/`
//! stays a 404, because an HTML page in place of a script would be cached as that script.
//! Built assets carry a content hash in their names and are cached for a year; everything else
//! is revalidated on each load, so a new build shows at once. The directory is looked at on
//! each request: building the portal while the node runs needs no restart.

use std::path::Path;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use tower_http::services::{ServeDir, ServeFile};

use crate::ApiState;
use crate::problem::ApiError;

/// Paths that belong to the node itself, never to the portal.
const RESERVED: [&str; 7] = [
    "/api", "/auth", "/topic", "/healthz", "/readyz", "/metrics", "/mqtt",
];

/// How to build the portal, as the README gives it.
pub const BUILD_COMMAND: &str = "npm --prefix portal ci && npm --prefix portal run build";

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn reserved(path: &str) -> bool {
    RESERVED.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

fn no_endpoint() -> Response {
    ApiError::not_found("no such endpoint: see /api/v1/openapi.json").into_response()
}

/// Serves the portal, or says there is no such endpoint.
pub async fn fallback(State(state): State<ApiState>, req: Request) -> Response {
    let Some(dir) = state.portal_dir.as_deref() else {
        return no_endpoint();
    };
    if reserved(req.uri().path()) || !matches!(*req.method(), Method::GET | Method::HEAD) {
        return no_endpoint();
    }
    let index = dir.join("index.html");
    if !tokio::fs::metadata(&index).await.is_ok_and(|m| m.is_file()) {
        return not_built(dir, wants_html(&req));
    }
    let asset = req.uri().path().starts_with("/assets/");
    let (parts, _) = req.into_parts();
    let again = || {
        let mut r = Request::new(Body::empty());
        *r.method_mut() = parts.method.clone();
        *r.uri_mut() = parts.uri.clone();
        *r.headers_mut() = parts.headers.clone();
        r
    };
    let served = ServeDir::new(dir)
        .precompressed_br()
        .precompressed_gzip()
        .try_call(again())
        .await;
    let served = match served {
        Ok(r) if r.status() == StatusCode::NOT_FOUND && !asset => {
            ServeFile::new(&index)
                .precompressed_br()
                .precompressed_gzip()
                .try_call(again())
                .await
        }
        other => other,
    };
    let mut response = match served {
        Ok(r) => r.map(Body::new),
        Err(e) => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the portal from {} failed: {e}", dir.display()),
            )
            .into_response();
        }
    };
    if response.status() == StatusCode::NOT_FOUND {
        return ApiError::not_found(format!(
            "{} is not part of the portal build",
            parts.uri.path()
        ))
        .into_response();
    }
    // A 304 refreshes the cached copy's headers, so an asset's must stay immutable too.
    let fresh = response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED;
    let cache = if asset && fresh {
        IMMUTABLE
    } else {
        "no-cache"
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn wants_html(req: &Request) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// 503 that says how to build the portal: a page for a browser, a problem for anything else.
fn not_built(dir: &Path, html: bool) -> Response {
    let detail = format!(
        "the portal is not built: no index.html in {}. Build it with `{BUILD_COMMAND}` \
         (or point portal_dir / --portal-dir at a build) and reload",
        dir.display()
    );
    if !html {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, detail).into_response();
    }
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Lotus: portal not built</title></head>\n\
         <body style=\"font-family:sans-serif;max-width:40rem;margin:4rem auto\">\n\
         <h1>The portal is not built</h1>\n\
         <p>This node serves the portal from <code>{}</code>, which has no <code>index.html</code>. Build it from the repository root:</p>\n\
         <pre>{}</pre>\n<p>then reload this page. The API is at <a href=\"/api/docs\">/api/docs</a>.</p>\n</body></html>\n",
        escape(&dir.display().to_string()),
        escape(BUILD_COMMAND),
    );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CACHE_CONTROL, "no-cache")],
        Html(page),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_prefixes_are_whole_segments() {
        for p in [
            "/api",
            "/api/v1/nope",
            "/auth",
            "/topic/a/b",
            "/healthz",
            "/mqtt",
        ] {
            assert!(reserved(p), "{p}");
        }
        for p in ["/", "/apis", "/devices/abc", "/authors", "/metrics-board"] {
            assert!(!reserved(p), "{p}");
        }
    }
}
