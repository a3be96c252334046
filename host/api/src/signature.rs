//! Signed API calls from registered apps: `X-Lotus-App`, `X-Lotus-Timestamp`, `X-Lotus-Nonce`
//! and `X-Lotus-Signature` (hex HMAC-SHA256 of the canonical request under the app's secret;
//! `docs/app-api.md` is the specification ISVs sign against).
//!
//! The signature covers the body, so it is checked in a middleware that has the body: it
//! buffers it (up to the API's body limit), checks the request, puts the body back
//! and hands the verified app to the [`crate::auth::Authenticated`] extractor through the
//! request's extensions. Requests without `X-Lotus-App` pass through untouched.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use lotus_storage::AppRow;
use sha2::{Digest, Sha256};

use crate::ApiState;
use crate::problem::ApiError;

pub const APP_HEADER: &str = "x-lotus-app";
pub const TIMESTAMP_HEADER: &str = "x-lotus-timestamp";
pub const NONCE_HEADER: &str = "x-lotus-nonce";
pub const SIGNATURE_HEADER: &str = "x-lotus-signature";

/// How far a request's timestamp may be from the node's clock unless configured otherwise.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// Most nonces remembered per app. Every accepted request leaves its nonce for up to twice the
/// window, so this caps one app at about this many signed calls per window; past it calls get
/// 429 rather than the oldest nonces being forgotten, which would reopen them to replay.
pub const MAX_NONCES_PER_APP: usize = 200_000;

const NONCE_MIN: usize = 16;
const NONCE_MAX: usize = 64;

/// The string an app signs: method, path, sorted query, timestamp, nonce and the body's
/// SHA-256, one per line (see `docs/app-api.md`).
pub fn canonical_request(
    method: &str,
    path: &str,
    query: Option<&str>,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        sorted_query(query.unwrap_or("")),
        timestamp,
        nonce,
        hex::encode(Sha256::digest(body))
    )
}

/// The query's `name=value` pairs exactly as sent (still percent-encoded), sorted by byte
/// value and joined with `&`. Sorting the raw pairs leaves nothing to disagree about: no
/// decoding, no re-encoding.
pub fn sorted_query(query: &str) -> String {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    pairs.join("&")
}

/// A fresh nonce for a client to send: 32 random hex characters.
pub fn new_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Lower-case hex HMAC-SHA256 of `canonical` under `secret`: what a client sends.
pub fn sign(secret: &str, canonical: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(canonical.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature` (hex) is the HMAC of `canonical` under `secret`, compared in constant
/// time so that the time taken says nothing about how many bytes matched.
fn signature_matches(secret: &str, canonical: &str, signature: &str) -> bool {
    let Ok(given) = hex::decode(signature.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(canonical.as_bytes());
    mac.verify_slice(&given).is_ok()
}

/// The app a signed request came from, left in the request's extensions for the extractor.
#[derive(Clone)]
pub(crate) struct VerifiedApp(pub AppRow);

/// Checks signed requests: the clock window and the nonces already seen.
pub struct AppSignatures {
    window_ms: i64,
    /// Requests signed before this node started are refused: the nonces seen before a restart
    /// are gone, so they could not be checked for replay.
    not_before_ms: i64,
    nonces: Mutex<HashMap<String, SeenNonces>>,
}

/// One app's nonces that are still inside the window, and when each may be forgotten.
///
/// For one node this is sufficient: a nonce only has to be remembered while a request carrying
/// it could still pass the timestamp check, i.e. until its signed timestamp plus the window
/// (the timestamp is signed, so a replay cannot move it); after that the clock check refuses
/// the replay on its own. All of this node's API calls go through this one process, so one
/// in-memory set sees every nonce; the `not_before_ms` check covers the set being empty after a
/// restart. Several nodes behind one address would need a shared set instead.
#[derive(Default)]
struct SeenNonces {
    seen: HashSet<String>,
    expiry: BinaryHeap<Reverse<(i64, String)>>,
}

impl SeenNonces {
    fn forget_expired(&mut self, now_ms: i64) {
        while let Some(Reverse((until, _))) = self.expiry.peek() {
            if *until >= now_ms {
                break;
            }
            let Reverse((_, nonce)) = self.expiry.pop().expect("peeked");
            self.seen.remove(&nonce);
        }
    }
}

/// Why a signed request was refused; each says what to fix.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing(&'static str),
    BadTimestamp(String),
    BadNonce(String),
    UnknownApp(String),
    Offline(String),
    BadSignature(String),
    Skewed {
        timestamp: i64,
        now: i64,
        window_s: i64,
    },
    BeforeStart(i64),
    Replay(String),
    TooMany(String),
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let detail = match r {
            Refusal::Missing(h) => format!(
                "the signed request lacks the {h} header: send X-Lotus-App, X-Lotus-Timestamp, \
                 X-Lotus-Nonce and X-Lotus-Signature (see docs/app-api.md)"
            ),
            Refusal::BadTimestamp(t) => {
                format!("X-Lotus-Timestamp {t:?} is not a Unix time in milliseconds")
            }
            Refusal::BadNonce(n) => format!(
                "X-Lotus-Nonce {n:?} must be {NONCE_MIN} to {NONCE_MAX} characters of letters, \
                 digits, '-' and '_', new for every request"
            ),
            Refusal::UnknownApp(id) => format!("unknown app {id:?}: check X-Lotus-App"),
            Refusal::Offline(id) => format!(
                "app {id} is offline: an administrator must set it online before it may call the API"
            ),
            Refusal::BadSignature(id) => format!(
                "bad signature for app {id}: sign METHOD, PATH, SORTED_QUERY, TIMESTAMP, NONCE and \
                 the body's SHA-256 with the app's current secret (see docs/app-api.md)"
            ),
            Refusal::Skewed {
                timestamp,
                now,
                window_s,
            } => format!(
                "X-Lotus-Timestamp {timestamp} is {} s from the node's clock ({now}); it must be \
                 within ±{window_s} s: check the caller's clock",
                (now - timestamp) / 1000
            ),
            Refusal::BeforeStart(start) => format!(
                "the request was signed before this node started ({start}); sign it again with \
                 a fresh timestamp and nonce"
            ),
            Refusal::Replay(n) => format!(
                "replayed request: nonce {n:?} was already used within the time window; use a \
                 new nonce for every request"
            ),
            Refusal::TooMany(id) => {
                return ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "app {id} sent more than {MAX_NONCES_PER_APP} signed requests within the \
                         time window: slow down"
                    ),
                );
            }
        };
        ApiError::unauthorized(detail)
    }
}

impl AppSignatures {
    /// Timestamps may be up to `window` from the node's clock.
    pub fn new(window: Duration, now_ms: i64) -> Self {
        AppSignatures {
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1),
            not_before_ms: now_ms,
            nonces: Mutex::new(HashMap::new()),
        }
    }

    /// The clock window in milliseconds.
    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// Parses the timestamp and nonce headers, before anything is looked up.
    fn parse(&self, timestamp: &str, nonce: &str) -> Result<i64, Refusal> {
        let ts: i64 = timestamp
            .parse()
            .map_err(|_| Refusal::BadTimestamp(timestamp.into()))?;
        let nonce_ok = (NONCE_MIN..=NONCE_MAX).contains(&nonce.len())
            && nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !nonce_ok {
            return Err(Refusal::BadNonce(nonce.chars().take(80).collect()));
        }
        Ok(ts)
    }

    /// The clock checks of an authentic request, then its nonce: remembered when new.
    fn admit(&self, client_id: &str, ts: i64, nonce: &str, now_ms: i64) -> Result<(), Refusal> {
        if (now_ms - ts).abs() > self.window_ms {
            return Err(Refusal::Skewed {
                timestamp: ts,
                now: now_ms,
                window_s: self.window_ms / 1000,
            });
        }
        if ts < self.not_before_ms {
            return Err(Refusal::BeforeStart(self.not_before_ms));
        }
        let mut all = self.nonces.lock().expect("nonce set poisoned");
        let seen = all.entry(client_id.to_string()).or_default();
        seen.forget_expired(now_ms);
        if seen.seen.contains(nonce) {
            return Err(Refusal::Replay(nonce.into()));
        }
        if seen.seen.len() >= MAX_NONCES_PER_APP {
            return Err(Refusal::TooMany(client_id.into()));
        }
        seen.seen.insert(nonce.to_string());
        seen.expiry.push(Reverse((
            ts.saturating_add(self.window_ms),
            nonce.to_string(),
        )));
        Ok(())
    }

    /// Drops the nonces of apps that sent nothing for a whole window, so deleted or idle apps
    /// keep no memory.
    fn sweep(&self, now_ms: i64) {
        let mut all = self.nonces.lock().expect("nonce set poisoned");
        all.retain(|_, seen| {
            seen.forget_expired(now_ms);
            !seen.seen.is_empty()
        });
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, Refusal> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or(Refusal::Missing(name))
}

/// The middleware: verifies requests that carry `X-Lotus-App` and passes every other one on.
pub async fn verify(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    if !req.headers().contains_key(APP_HEADER) {
        return next.run(req).await;
    }
    match verified(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn verified(state: &ApiState, req: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    let signatures = &state.app_signatures;
    let client_id = header(&parts.headers, APP_HEADER)?.to_string();
    let timestamp = header(&parts.headers, TIMESTAMP_HEADER)?.to_string();
    let nonce = header(&parts.headers, NONCE_HEADER)?.to_string();
    let signature = header(&parts.headers, SIGNATURE_HEADER)?.to_string();
    let ts = signatures.parse(&timestamp, &nonce)?;
    // No route takes an app more than the API's body limit, so nothing larger is buffered.
    let body: Bytes = axum::body::to_bytes(body, crate::API_BODY_LIMIT)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body could not be read, or is larger than {} MiB",
                    crate::API_BODY_LIMIT / (1024 * 1024)
                ),
            )
        })?;
    let (app, secret) = state
        .store
        .app_with_secret(&client_id)
        .await?
        .ok_or_else(|| Refusal::UnknownApp(client_id.clone()))?;
    let canonical = canonical_request(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query(),
        &timestamp,
        &nonce,
        &body,
    );
    // The signature is checked before the app's status, the clock and the nonce, so that only
    // the secret's holder learns those and only authentic requests take room in the nonce set.
    if !signature_matches(secret.expose(), &canonical, &signature) {
        tracing::warn!(app = %client_id, method = %parts.method, path = %parts.uri.path(), "bad app signature");
        return Err(Refusal::BadSignature(client_id).into());
    }
    if !app.is_online() {
        return Err(Refusal::Offline(client_id).into());
    }
    let now = lotus_device::now_ms();
    signatures.admit(&client_id, ts, &nonce, now)?;
    if rand::random::<u16>() == 0 {
        signatures.sweep(now);
    }
    parts.extensions.insert(VerifiedApp(app));
    Ok(Request::from_parts(parts, Body::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_string_is_specified() {
        // The method upper-cased, the query's pairs sorted, the empty body's SHA-256.
        let c = canonical_request(
            "get",
            "/api/v1/products/a1B2c3D4e5F/devices/lamp-0001",
            Some("b=2&a=1&a=0"),
            "1767225600000",
            "3f9a1c0e7b5d4a2f",
            b"",
        );
        assert_eq!(
            c,
            "GET\n/api/v1/products/a1B2c3D4e5F/devices/lamp-0001\na=0&a=1&b=2\n1767225600000\n\
             3f9a1c0e7b5d4a2f\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(sorted_query(""), "");
        assert_eq!(sorted_query("&x=%2F&&"), "x=%2F");
        let sig = sign("s3cret", &c);
        assert_eq!(sig.len(), 64);
        assert!(signature_matches("s3cret", &c, &sig));
        assert!(signature_matches("s3cret", &c, &sig.to_uppercase()));
        assert!(!signature_matches("other", &c, &sig));
        assert!(!signature_matches("s3cret", &c, "zz"));
    }

    #[test]
    fn worked_examples_of_the_documentation() {
        // docs/app-api.md, reproduced there with openssl.
        let secret = "k7Qm2ZxP9vLr4TbN8sWc3HyJ6dFg1AeU5oRi0KpV";
        let get = canonical_request(
            "GET",
            "/api/v1/devices",
            Some("status=online&pageSize=10&page=2"),
            "1767225600000",
            "3f9a1c0e7b5d4a2f8e6c0b1d2a3f4e5d",
            b"",
        );
        assert_eq!(
            sign(secret, &get),
            "56927a3dfdb62ce1a0365cb76b35340af9412498b8c3711443f7c3bb7f298ab7"
        );
        let patch = canonical_request(
            "PATCH",
            "/api/v1/products/a1B2c3D4e5F/devices/lamp-0001",
            None,
            "1767225601000",
            "9b2e4d6f8a0c1e3b5d7f9a1c3e5b7d9f",
            br#"{"nickname":"Lamp by the lake"}"#,
        );
        assert!(
            patch.ends_with("\ne986f2fa7eba400b27c3f6d3d8fd77f0b52adb517e48d626301036c45274a3bb")
        );
        assert_eq!(
            sign(secret, &patch),
            "39604244684cd4192481419c8cad2fe07f304bf9764df6fb248a0f76b2d489c0"
        );
    }

    #[test]
    fn nonces_and_clock() {
        let s = AppSignatures::new(Duration::from_secs(300), 1_000_000);
        let now = 1_000_000 + 10_000;
        assert!(matches!(
            s.parse("x", "abcdefghijklmnop"),
            Err(Refusal::BadTimestamp(_))
        ));
        assert!(matches!(s.parse("1", "short"), Err(Refusal::BadNonce(_))));
        assert!(matches!(
            s.parse("1", "abcdefghijklmnop\n"),
            Err(Refusal::BadNonce(_))
        ));
        assert_eq!(s.parse("5", "abcdefghijklmnop"), Ok(5));

        assert_eq!(s.admit("app_a", now, "abcdefghijklmnop", now), Ok(()));
        assert_eq!(
            s.admit("app_a", now, "abcdefghijklmnop", now + 1),
            Err(Refusal::Replay("abcdefghijklmnop".into()))
        );
        // Nonces are per app.
        assert_eq!(s.admit("app_b", now, "abcdefghijklmnop", now), Ok(()));
        assert!(matches!(
            s.admit("app_a", now - 301_000, "0123456789abcdef", now),
            Err(Refusal::Skewed { .. })
        ));
        assert!(matches!(
            s.admit("app_a", now + 301_000, "0123456789abcdef", now),
            Err(Refusal::Skewed { .. })
        ));
        assert_eq!(
            s.admit("app_a", 999_000, "0123456789abcdef", now),
            Err(Refusal::BeforeStart(1_000_000))
        );
        // Once its timestamp has left the window the nonce is forgotten: the clock refuses it.
        let later = now + 300_001;
        s.sweep(later);
        assert!(s.nonces.lock().unwrap().is_empty());
        assert!(matches!(
            s.admit("app_a", now, "abcdefghijklmnop", later),
            Err(Refusal::Skewed { .. })
        ));
    }
}
