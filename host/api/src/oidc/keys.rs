//! The provider's signing keys: P-256 (ES256), made on first use, the private key sealed with
//! the master key. The JWKS publishes retired keys too, so ID tokens signed before a rotation
//! still verify until they expire; a key retired longer ago than the retention (the ID token
//! life plus a margin) has signed nothing that is still valid, and is deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::extract::State;
use axum::http::StatusCode;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lotus_storage::{OidcSigningKeyRow, Secret, Store};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json};

/// The only algorithm the provider signs with.
pub const ALG: &str = "ES256";

/// How long a node signs with the key it loaded before looking again, so a rotation made on
/// another node reaches this one within that time.
const RELOAD_AFTER: Duration = Duration::from_secs(60);

/// The key that signs now.
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
}

impl SigningKey {
    /// A compact JWS of `claims`, with this key's `kid` in the header.
    pub fn sign<T: Serialize>(&self, claims: &T) -> ApiResult<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| internal("signing", e))
    }
}

/// The signing key as loaded, shared by the requests of a node.
#[derive(Default)]
pub struct KeyRing {
    current: tokio::sync::Mutex<Option<(Instant, Arc<SigningKey>)>>,
}

impl KeyRing {
    /// The key that signs now; makes the first one when there is none yet.
    pub async fn active(&self, store: &Store) -> ApiResult<Arc<SigningKey>> {
        // One lock for load and creation: two requests of a fresh node make one key, not two.
        let mut current = self.current.lock().await;
        if let Some((at, key)) = current.as_ref()
            && at.elapsed() < RELOAD_AFTER
        {
            return Ok(key.clone());
        }
        let key = match store.oidc_active_signing_key().await? {
            Some((row, private)) => Arc::new(load(&row.kid, &private)?),
            None => {
                let key = Arc::new(create(store).await?);
                tracing::info!(kid = %key.kid, "made the OpenID Connect signing key");
                key
            }
        };
        *current = Some((Instant::now(), key.clone()));
        Ok(key)
    }

    /// Makes a new signing key and retires the others (they stay in the JWKS).
    pub async fn rotate(&self, store: &Store) -> ApiResult<Arc<SigningKey>> {
        let mut current = self.current.lock().await;
        let key = Arc::new(create(store).await?);
        *current = Some((Instant::now(), key.clone()));
        Ok(key)
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "OpenID Connect {what} failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("OpenID Connect {what} failed: {e}"),
    )
}

fn load(kid: &str, private_hex: &Secret) -> ApiResult<SigningKey> {
    let der = hex::decode(private_hex.expose()).map_err(|e| internal("loading the key", e))?;
    // Parsing checks the key now rather than at the first signature.
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
        .map_err(|e| internal("loading the key", e))?;
    Ok(SigningKey {
        kid: kid.to_string(),
        encoding: EncodingKey::from_ec_der(&der),
    })
}

/// A new P-256 key, stored sealed; its `kid` is its RFC 7638 thumbprint.
async fn create(store: &Store) -> ApiResult<SigningKey> {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|e| internal("making a key", e))?;
    let der = pkcs8.as_ref().to_vec();
    let encoding = EncodingKey::from_ec_der(&der);
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256)
        .map_err(|e| internal("making a key", e))?;
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| internal("making a key", e))?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let public = serde_json::to_string(&jwk).map_err(|e| internal("making a key", e))?;
    store
        .add_oidc_signing_key(&kid, ALG, &Secret::new(hex::encode(&der)), &public)
        .await?;
    Ok(SigningKey { kid, encoding })
}

/// The default of how long a retired key stays published: the ID token life and a day, so
/// that clients caching the JWKS and clocks that disagree are covered.
pub const DEFAULT_RETENTION: Duration =
    Duration::from_secs(super::provider::TOKEN_TTL_SECS as u64 + 24 * 3600);

/// The keys to publish: the signing key and those retired less than `retention` ago. Deletes
/// the others.
pub async fn published(store: &Store, retention: Duration) -> ApiResult<Vec<OidcSigningKeyRow>> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let before = lotus_device::now_ms().saturating_sub(retention_ms);
    let dropped = store.delete_retired_oidc_signing_keys(before).await?;
    if !dropped.is_empty() {
        tracing::info!(kids = ?dropped, "deleted OpenID Connect signing keys retired longer than the retention");
    }
    Ok(store.oidc_signing_keys().await?)
}

/// `{"keys": [...]}` with the published keys, the signing one first.
pub async fn jwks(store: &Store, retention: Duration) -> ApiResult<Value> {
    let keys = published(store, retention)
        .await?
        .into_iter()
        .filter_map(|k| match serde_json::from_str::<Value>(&k.public_jwk) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(kid = %k.kid, error = %e, "a stored public key is not JSON; left out of the JWKS");
                None
            }
        })
        .collect::<Vec<_>>();
    Ok(json!({ "keys": keys }))
}

/// The key that signs from now on.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedKey {
    pub kid: String,
    pub alg: String,
}

/// Make a new signing key. ID tokens are signed with it from now on; the old keys stay in the
/// JWKS so tokens they signed still verify, until they have been retired longer than the
/// retention (`[auth] oidc_key_retention_secs`, by default the ID token life and a day).
/// Asks `oidc_key.write`.
#[utoipa::path(post, path = "/api/v1/oauth2/keys/rotate", tag = "openid connect",
    security(("bearer" = [])),
    responses((status = 200, body = RotatedKey), (status = 403, body = crate::problem::Problem)))]
pub async fn rotate(
    State(state): State<ApiState>,
    caller: Authenticated,
) -> ApiResult<Json<RotatedKey>> {
    let actor = super::session_user(&caller)?.username.clone();
    crate::authz::global(&state, &caller, "oidc_key", "write", "signing")?;
    let key = state.oidc.keys.rotate(&state.store).await?;
    tracing::info!(kid = %key.kid, by = %actor, "rotated the OpenID Connect signing key");
    crate::audit::record(
        &state,
        &actor,
        "oidc.key_rotate",
        &format!("oidc-key:{}", key.kid),
        "ok",
        json!({}),
    )
    .await;
    Ok(Json(RotatedKey {
        kid: key.kid.clone(),
        alg: ALG.into(),
    }))
}
