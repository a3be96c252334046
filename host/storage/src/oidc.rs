//! OpenID Connect state: the provider's signing keys, its authorization codes, grants, access
//! and refresh tokens, and the log-ins through an external provider that are in progress.
//!
//! Codes, tokens and log-in states are stored only as the hex SHA-256 of their value (the
//! caller hashes). Codes and refresh tokens are spent with a conditional `UPDATE … RETURNING`
//! and log-in states taken with `DELETE … RETURNING`, so each can be redeemed once even when
//! two requests race. Spent codes and refresh tokens stay until they expire, so that a second
//! use is recognised and revokes the grant they belong to (RFC 6749 §10.5, OAuth 2.0 Security
//! BCP §4.14).

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
    /// The grant it was issued under (`None` for tokens from before grants existed).
    pub grant_id: Option<String>,
}

/// One authorization: the tokens issued from one authorization code and every refresh that
/// descends from them, revoked together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcGrant {
    /// The SHA-256 (hex) of the authorization code it began with.
    pub grant_id: String,
    pub client_id: String,
    pub user_id: i64,
    /// When the user logged in for it (Unix ms): the `auth_time` of every ID token it yields.
    pub auth_time: i64,
}

/// A refresh token the provider issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcRefreshToken {
    pub grant_id: String,
    pub client_id: String,
    pub user_id: i64,
    pub scope: String,
    pub expires_at: i64,
    /// When it was exchanged; a spent token presented again is a replay.
    pub used_at: Option<i64>,
    /// The grant's `auth_time` (read with the token; ignored when storing it).
    pub auth_time: i64,
}

/// What presenting an authorization code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// Its first use within its life: the code as stored, now spent.
    Fresh(OidcCode),
    /// It was used before: the grant issued from it has just been revoked.
    Reused { client_id: String, user_id: i64 },
    /// Never issued, or expired.
    Unknown,
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

/// How long the revocation mark of a grant that never issued anything is kept: longer than
/// any issuance racing the revocation can take.
const GRANT_MARK_TTL_MS: i64 = 24 * 3600 * 1000;

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

    /// Spends a code: it cannot be redeemed again whatever the caller decides, so it cannot be
    /// tried twice. A code presented a second time revokes the grant issued from it.
    pub async fn redeem_oidc_code(&self, code_hash: &str, now: i64) -> Result<CodeRedemption> {
        let fresh = sqlx::query(
            "UPDATE oidc_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL \
             RETURNING client_id, user_id, redirect_uri, scope, nonce, code_challenge, \
             auth_time, expires_at",
        )
        .bind(code_hash)
        .bind(now)
        .fetch_optional(self.write())
        .await?;
        if let Some(r) = fresh {
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
            return Ok(if code.expires_at > now {
                CodeRedemption::Fresh(code)
            } else {
                CodeRedemption::Unknown
            });
        }
        let Some(r) = sqlx::query(
            "SELECT client_id, user_id, auth_time, expires_at FROM oidc_codes \
             WHERE code_hash = $1 AND used_at IS NOT NULL",
        )
        .bind(code_hash)
        .fetch_optional(self.read())
        .await?
        else {
            return Ok(CodeRedemption::Unknown);
        };
        let expires_at: i64 = r.try_get("expires_at")?;
        if expires_at <= now {
            return Ok(CodeRedemption::Unknown);
        }
        let grant = OidcGrant {
            grant_id: code_hash.to_string(),
            client_id: r.try_get("client_id")?,
            user_id: r.try_get("user_id")?,
            auth_time: r.try_get("auth_time")?,
        };
        self.revoke_oidc_grant(&grant, now).await?;
        Ok(CodeRedemption::Reused {
            client_id: grant.client_id,
            user_id: grant.user_id,
        })
    }

    /// Revokes a grant: marks it revoked (creating the mark if its first tokens are still
    /// being issued, so that issuance fails) and deletes its access and refresh tokens.
    /// Returns how many tokens were deleted.
    pub async fn revoke_oidc_grant(&self, grant: &OidcGrant, now: i64) -> Result<u64> {
        let mut tx = self.write().begin().await?;
        sqlx::query(
            "INSERT INTO oidc_grants (grant_id, client_id, user_id, auth_time, created_at, \
             expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $5) \
             ON CONFLICT (grant_id) DO UPDATE SET revoked_at = $5",
        )
        .bind(&grant.grant_id)
        .bind(&grant.client_id)
        .bind(grant.user_id)
        .bind(grant.auth_time)
        .bind(now)
        // Kept as long as a token issued concurrently could live, then cleaned up.
        .bind(now + GRANT_MARK_TTL_MS)
        .execute(&mut *tx)
        .await?;
        let mut deleted = 0;
        for table in ["oidc_access_tokens", "oidc_refresh_tokens"] {
            deleted += sqlx::query(&format!("DELETE FROM {table} WHERE grant_id = $1"))
                .bind(&grant.grant_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// The grant a refresh token or access token belongs to.
    pub async fn oidc_grant(&self, grant_id: &str) -> Result<Option<OidcGrant>> {
        let Some(r) = sqlx::query(
            "SELECT grant_id, client_id, user_id, auth_time FROM oidc_grants WHERE grant_id = $1",
        )
        .bind(grant_id)
        .fetch_optional(self.read())
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(OidcGrant {
            grant_id: r.try_get("grant_id")?,
            client_id: r.try_get("client_id")?,
            user_id: r.try_get("user_id")?,
            auth_time: r.try_get("auth_time")?,
        }))
    }

    /// Revokes everything a client holds for a user (RP-initiated logout): every grant, access
    /// token and refresh token. Returns how many tokens were deleted.
    pub async fn revoke_oidc_tokens_of(
        &self,
        client_id: &str,
        user_id: i64,
        now: i64,
    ) -> Result<u64> {
        let mut tx = self.write().begin().await?;
        sqlx::query(
            "UPDATE oidc_grants SET revoked_at = $3 \
             WHERE client_id = $1 AND user_id = $2 AND revoked_at IS NULL",
        )
        .bind(client_id)
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut deleted = 0;
        for table in ["oidc_access_tokens", "oidc_refresh_tokens"] {
            deleted += sqlx::query(&format!(
                "DELETE FROM {table} WHERE client_id = $1 AND user_id = $2"
            ))
            .bind(client_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Issues tokens under a grant, starting the grant if this is its first issuance: the
    /// access token and, if given, a refresh token. `false` (and nothing stored) when the grant
    /// has been revoked meanwhile. Drops expired tokens and grants.
    pub async fn issue_oidc_tokens(
        &self,
        grant: &OidcGrant,
        access_hash: &str,
        access: &OidcAccessToken,
        refresh: Option<(&str, &OidcRefreshToken)>,
    ) -> Result<bool> {
        let now = now_ms();
        let last = refresh
            .map_or(access.expires_at, |(_, r)| r.expires_at)
            .max(access.expires_at);
        let mut tx = self.write().begin().await?;
        for table in ["oidc_access_tokens", "oidc_refresh_tokens", "oidc_grants"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE expires_at <= $1"))
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO oidc_grants (grant_id, client_id, user_id, auth_time, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (grant_id) DO NOTHING",
        )
        .bind(&grant.grant_id)
        .bind(&grant.client_id)
        .bind(grant.user_id)
        .bind(grant.auth_time)
        .bind(now)
        .bind(last)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if StorageError::is_foreign_key_violation(&e) {
                StorageError::NotFound(format!("user {} not found", grant.user_id))
            } else {
                e.into()
            }
        })?;
        // Updating the row (rather than reading it) locks it on PostgreSQL, so a revocation
        // running at the same time either comes first (and this finds it revoked) or waits for
        // this transaction and then deletes what it stored.
        let live = sqlx::query(
            "UPDATE oidc_grants SET expires_at = CASE WHEN expires_at < $2 THEN $2 \
             ELSE expires_at END WHERE grant_id = $1 AND revoked_at IS NULL",
        )
        .bind(&grant.grant_id)
        .bind(last)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if live == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO oidc_access_tokens (token_hash, client_id, user_id, scope, expires_at, \
             grant_id) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(access_hash)
        .bind(&access.client_id)
        .bind(access.user_id)
        .bind(&access.scope)
        .bind(access.expires_at)
        .bind(&grant.grant_id)
        .execute(&mut *tx)
        .await?;
        if let Some((hash, r)) = refresh {
            sqlx::query(
                "INSERT INTO oidc_refresh_tokens (token_hash, grant_id, client_id, user_id, \
                 scope, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(hash)
            .bind(&grant.grant_id)
            .bind(&r.client_id)
            .bind(r.user_id)
            .bind(&r.scope)
            .bind(now)
            .bind(r.expires_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A refresh token that has not expired at `now`, spent or not, with its grant's
    /// `auth_time`.
    pub async fn oidc_refresh_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<OidcRefreshToken>> {
        let Some(r) = sqlx::query(
            "SELECT t.grant_id, t.client_id, t.user_id, t.scope, t.expires_at, t.used_at, \
             g.auth_time FROM oidc_refresh_tokens t JOIN oidc_grants g ON g.grant_id = t.grant_id \
             WHERE t.token_hash = $1 AND t.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.read())
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(OidcRefreshToken {
            grant_id: r.try_get("grant_id")?,
            client_id: r.try_get("client_id")?,
            user_id: r.try_get("user_id")?,
            scope: r.try_get("scope")?,
            expires_at: r.try_get("expires_at")?,
            used_at: r.try_get("used_at")?,
            auth_time: r.try_get("auth_time")?,
        }))
    }

    /// Spends a refresh token; `false` when it was spent already (by a request racing this
    /// one), gone or expired.
    pub async fn spend_oidc_refresh_token(&self, token_hash: &str, now: i64) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE oidc_refresh_tokens SET used_at = $2 \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .execute(self.write())
        .await?
        .rows_affected()
            == 1)
    }

    /// Deletes one access token of a client (RFC 7009); `false` when the client has none with
    /// this hash.
    pub async fn revoke_oidc_access_token(
        &self,
        token_hash: &str,
        client_id: &str,
    ) -> Result<bool> {
        Ok(
            sqlx::query("DELETE FROM oidc_access_tokens WHERE token_hash = $1 AND client_id = $2")
                .bind(token_hash)
                .bind(client_id)
                .execute(self.write())
                .await?
                .rows_affected()
                == 1,
        )
    }

    /// An access token that has not expired at `now`.
    pub async fn oidc_access_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<OidcAccessToken>> {
        let Some(r) = sqlx::query(
            "SELECT client_id, user_id, scope, expires_at, grant_id FROM oidc_access_tokens \
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
            grant_id: r.try_get("grant_id")?,
        }))
    }

    /// When the user of the session with this token hash last proved who they are (Unix ms):
    /// its log-in, or the last re-authentication. The `auth_time` of what the provider issues
    /// from it.
    pub async fn session_authenticated_at(&self, token_hash: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(authenticated_at, created_at) FROM sessions WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.read())
        .await?)
    }

    /// Records that the session's user has just entered their password again.
    pub async fn reauthenticate_session(&self, token_hash: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE sessions SET authenticated_at = $2 WHERE token_hash = $1")
            .bind(token_hash)
            .bind(now)
            .execute(self.write())
            .await?;
        Ok(())
    }

    /// The redirect URIs of every registered app (the origins that may call the provider's
    /// endpoints from a browser).
    pub async fn oidc_redirect_uris(&self) -> Result<Vec<String>> {
        let mut all = Vec::new();
        for r in sqlx::query("SELECT redirect_uris FROM apps")
            .fetch_all(self.read())
            .await?
        {
            all.extend(crate::sql::json::<Vec<String>>(&r, "redirect_uris")?);
        }
        Ok(all)
    }

    /// Deletes the keys retired before `before` (Unix ms); returns their ids.
    pub async fn delete_retired_oidc_signing_keys(&self, before: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "DELETE FROM oidc_signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1 \
             RETURNING kid",
        )
        .bind(before)
        .fetch_all(self.write())
        .await?)
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
