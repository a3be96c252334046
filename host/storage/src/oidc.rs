//! OpenID Connect state: the provider's signing keys, its authorization codes and access tokens,
//! and the log-ins through an external provider that are in progress.
//!
//! Codes, tokens and log-in states are stored only as the hex SHA-256 of their value (the
//! caller hashes), and codes and log-in states are taken with `DELETE … RETURNING`, so each
//! can be redeemed once even when two requests race.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StorageError};
use crate::{Secret, Store, now_ms};

/// A signing key as published: its id, algorithm and public JWK (never the private key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSigningKeyRow {
    pub kid: String,
    /// JWS algorithm, e.g. `ES256`.
    pub alg: String,
    /// The public key as a JWK (JSON text).
    pub public_jwk: String,
    pub created_at: i64,
    /// `None` for the key that signs now.
    pub retired_at: Option<i64>,
}

/// An authorization code as the authorize step stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcCode {
    pub client_id: String,
    pub user_id: i64,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    /// The PKCE S256 challenge (base64url of SHA-256 of the verifier).
    pub code_challenge: String,
    /// When the user logged in (Unix ms).
    pub auth_time: i64,
    pub expires_at: i64,
}

/// An access token the provider issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcAccessToken {
    pub client_id: String,
    pub user_id: i64,
    pub scope: String,
    pub expires_at: i64,
}

/// A log-in through the external provider, between start and callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcLoginState {
    pub nonce: String,
    /// The PKCE code verifier (stored sealed).
    pub verifier: Secret,
    /// The portal path to go to once logged in.
    pub return_to: String,
    pub expires_at: i64,
}

const KEY_COLUMNS: &str = "kid, alg, public_jwk, created_at, retired_at";

fn key_row(r: &AnyRow) -> Result<OidcSigningKeyRow> {
    Ok(OidcSigningKeyRow {
        kid: r.try_get("kid")?,
        alg: r.try_get("alg")?,
        public_jwk: r.try_get("public_jwk")?,
        created_at: r.try_get("created_at")?,
        retired_at: r.try_get("retired_at")?,
    })
}

/// The associated data that binds a sealed private key to its key id.
fn key_context(kid: &str) -> String {
    format!("oidc-key:{kid}")
}

fn state_context(state_hash: &str) -> String {
    format!("oidc-login:{state_hash}")
}

impl Store {
    /// Every signing key, the signing one first, then the retired ones from newest.
    pub async fn oidc_signing_keys(&self) -> Result<Vec<OidcSigningKeyRow>> {
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM oidc_signing_keys \
             ORDER BY CASE WHEN retired_at IS NULL THEN 0 ELSE 1 END, created_at DESC, kid"
        ))
        .fetch_all(self.read())
        .await?
        .iter()
        .map(key_row)
        .collect()
    }

    /// The key that signs now and its private key (PKCS#8 DER, hex); `None` before the first
    /// key is made. Should two nodes have made a first key at once, the newest wins; both are
    /// published, so tokens of either verify.
    pub async fn oidc_active_signing_key(&self) -> Result<Option<(OidcSigningKeyRow, Secret)>> {
        let Some(r) = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS}, private_enc FROM oidc_signing_keys WHERE retired_at IS NULL \
             ORDER BY created_at DESC, kid LIMIT 1"
        ))
        .fetch_optional(self.read())
        .await?
        else {
            return Ok(None);
        };
        let row = key_row(&r)?;
        let sealed: String = r.try_get("private_enc")?;
        let private = self.secrets().open(&key_context(&row.kid), &sealed)?;
        Ok(Some((row, private)))
    }

    /// Stores a new signing key (private key sealed with the master key) and retires every
    /// other one, in one transaction: from then on only the new key signs.
    pub async fn add_oidc_signing_key(
        &self,
        kid: &str,
        alg: &str,
        private_key: &Secret,
        public_jwk: &str,
    ) -> Result<OidcSigningKeyRow> {
        let now = now_ms();
        let sealed = self
            .secrets()
            .seal(&key_context(kid), private_key.expose())?;
        let mut tx = self.write().begin().await?;
        sqlx::query("UPDATE oidc_signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO oidc_signing_keys (kid, alg, private_enc, public_jwk, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(kid)
        .bind(alg)
        .bind(sealed)
        .bind(public_jwk)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if StorageError::is_unique_violation(&e) {
                StorageError::Conflict(format!("signing key '{kid}' already exists"))
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        Ok(OidcSigningKeyRow {
            kid: kid.to_string(),
            alg: alg.to_string(),
            public_jwk: public_jwk.to_string(),
            created_at: now,
            retired_at: None,
        })
    }

    /// Stores an authorization code and drops the expired ones.
    pub async fn create_oidc_code(&self, code_hash: &str, code: &OidcCode) -> Result<()> {
        let mut tx = self.write().begin().await?;
        sqlx::query("DELETE FROM oidc_codes WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO oidc_codes (code_hash, client_id, user_id, redirect_uri, scope, nonce, \
             code_challenge, auth_time, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(code_hash)
        .bind(&code.client_id)
        .bind(code.user_id)
        .bind(&code.redirect_uri)
        .bind(&code.scope)
        .bind(code.nonce.as_deref())
        .bind(&code.code_challenge)
        .bind(code.auth_time)
        .bind(code.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if StorageError::is_foreign_key_violation(&e) {
                StorageError::NotFound(format!("user {} not found", code.user_id))
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes a code: it is gone afterwards whatever the caller decides, so it cannot be tried
    /// twice. `None` when it never existed, was taken already or has expired at `now`.
    pub async fn take_oidc_code(&self, code_hash: &str, now: i64) -> Result<Option<OidcCode>> {
        let Some(r) = sqlx::query(
            "DELETE FROM oidc_codes WHERE code_hash = $1 RETURNING client_id, user_id, \
             redirect_uri, scope, nonce, code_challenge, auth_time, expires_at",
        )
        .bind(code_hash)
        .fetch_optional(self.write())
        .await?
        else {
            return Ok(None);
        };
        let code = OidcCode {
            client_id: r.try_get("client_id")?,
            user_id: r.try_get("user_id")?,
            redirect_uri: r.try_get("redirect_uri")?,
            scope: r.try_get("scope")?,
            nonce: r.try_get("nonce")?,
            code_challenge: r.try_get("code_challenge")?,
            auth_time: r.try_get("auth_time")?,
            expires_at: r.try_get("expires_at")?,
        };
        Ok((code.expires_at > now).then_some(code))
    }

    /// Stores an access token and drops the expired ones.
    pub async fn create_oidc_access_token(
        &self,
        token_hash: &str,
        token: &OidcAccessToken,
    ) -> Result<()> {
        let mut tx = self.write().begin().await?;
        sqlx::query("DELETE FROM oidc_access_tokens WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO oidc_access_tokens (token_hash, client_id, user_id, scope, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(&token.client_id)
        .bind(token.user_id)
        .bind(&token.scope)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An access token that has not expired at `now`.
    pub async fn oidc_access_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<OidcAccessToken>> {
        let Some(r) = sqlx::query(
            "SELECT client_id, user_id, scope, expires_at FROM oidc_access_tokens \
             WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.read())
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(OidcAccessToken {
            client_id: r.try_get("client_id")?,
            user_id: r.try_get("user_id")?,
            scope: r.try_get("scope")?,
            expires_at: r.try_get("expires_at")?,
        }))
    }

    /// The name of the user with this id (the subject of a code or token).
    pub async fn username_of_user(&self, user_id: i64) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(self.read())
                .await?,
        )
    }

    /// When the session with this token hash began (Unix ms): the `auth_time` of what the
    /// provider issues from it.
    pub async fn session_started_at(&self, token_hash: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT created_at FROM sessions WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(self.read())
                .await?,
        )
    }

    /// Stores a log-in through the external provider that has just started, and drops the
    /// expired ones.
    pub async fn create_oidc_login_state(
        &self,
        state_hash: &str,
        state: &OidcLoginState,
    ) -> Result<()> {
        let sealed = self
            .secrets()
            .seal(&state_context(state_hash), state.verifier.expose())?;
        let mut tx = self.write().begin().await?;
        sqlx::query("DELETE FROM oidc_login_states WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO oidc_login_states (state_hash, nonce, verifier_enc, return_to, \
             expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(state_hash)
        .bind(&state.nonce)
        .bind(sealed)
        .bind(&state.return_to)
        .bind(state.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes a log-in state (single use); `None` when unknown, taken already or expired.
    pub async fn take_oidc_login_state(
        &self,
        state_hash: &str,
        now: i64,
    ) -> Result<Option<OidcLoginState>> {
        let Some(r) = sqlx::query(
            "DELETE FROM oidc_login_states WHERE state_hash = $1 \
             RETURNING nonce, verifier_enc, return_to, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(self.write())
        .await?
        else {
            return Ok(None);
        };
        let expires_at: i64 = r.try_get("expires_at")?;
        if expires_at <= now {
            return Ok(None);
        }
        let sealed: String = r.try_get("verifier_enc")?;
        Ok(Some(OidcLoginState {
            nonce: r.try_get("nonce")?,
            verifier: self.secrets().open(&state_context(state_hash), &sealed)?,
            return_to: r.try_get("return_to")?,
            expires_at,
        }))
    }
}
