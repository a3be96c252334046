//! What a test relying party of OpenID Connect needs from the specifications: a client that
//! shows redirects instead of following them, random values, the PKCE challenge, and the
//! parameters of a redirect.

use base64::Engine;
use rand::RngCore;
use reqwest::Url;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A client that shows redirects instead of following them, as a browser's address bar would.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client")
}

/// 32 random bytes, base64url: a state, nonce or PKCE verifier.
pub fn random() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The PKCE challenge of a verifier (RFC 7636 §4.2).
pub fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The query parameters of a URL, as JSON strings.
pub fn query(url: &str) -> Map<String, Value> {
    Url::parse(url)
        .unwrap_or_else(|e| panic!("not a URL ({e}): {url}"))
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

/// The `Location` of a redirect; panics (failing the test) when there is none.
pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .unwrap_or_else(|| panic!("no Location in a {} answer", resp.status()))
        .to_str()
        .expect("a Location of visible ASCII")
        .to_string()
}
