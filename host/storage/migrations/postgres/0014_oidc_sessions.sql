-- OpenID Connect sessions: refresh tokens, grants that can be revoked as a whole, spent
-- authorization codes, re-authentication, and RP-initiated logout. Keep it identical to
-- ../sqlite/0014_oidc_sessions.sql.

-- A grant is one authorization: the tokens issued from one authorization code and every
-- refresh descended from them. `grant_id` is the SHA-256 of that code. Revoking it (the code
-- presented twice, a spent refresh token presented again, RP-initiated logout, revocation of
-- a refresh token) sets `revoked_at` and deletes its tokens; issuing under a revoked grant is
-- refused, so a revocation that races an issuance still wins. `expires_at` is when its last
-- token expires: the row is kept until then.
CREATE TABLE oidc_grants (
    grant_id   TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    auth_time  BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX oidc_grants_client_user ON oidc_grants (client_id, user_id);
CREATE INDEX oidc_grants_expires ON oidc_grants (expires_at);

-- A code is no longer deleted when used: `used_at` marks it spent until it expires, so that a
-- second use is recognised (and revokes the grant) instead of looking like an unknown code.
ALTER TABLE oidc_codes ADD COLUMN used_at BIGINT;

-- The grant an access token belongs to (NULL for tokens issued before grants existed).
ALTER TABLE oidc_access_tokens ADD COLUMN grant_id TEXT;
CREATE INDEX oidc_access_tokens_grant ON oidc_access_tokens (grant_id);
CREATE INDEX oidc_access_tokens_client_user ON oidc_access_tokens (client_id, user_id);

-- Refresh tokens (opaque, stored as SHA-256). Each is used once: `used_at` marks it spent and
-- it stays until it expires, so presenting it again is recognised as a replay.
CREATE TABLE oidc_refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX oidc_refresh_tokens_grant ON oidc_refresh_tokens (grant_id);
CREATE INDEX oidc_refresh_tokens_client_user ON oidc_refresh_tokens (client_id, user_id);
CREATE INDEX oidc_refresh_tokens_expires ON oidc_refresh_tokens (expires_at);

-- When the session's user last proved who they are (log-in, or re-entering the password for
-- an app's `prompt=login` / `max_age`); NULL: at `created_at`. It is the ID token's auth_time.
ALTER TABLE sessions ADD COLUMN authenticated_at BIGINT;

-- Where an app may send its users after RP-initiated logout (JSON array, exact match).
ALTER TABLE apps ADD COLUMN post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]';
