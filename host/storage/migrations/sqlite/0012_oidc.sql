-- OpenID Connect: Lotus as the provider that apps sign their users in with, and as a relying
-- party of the city's own provider. Keep it identical to ../postgres/0012_oidc.sql.
--
-- Signing keys: the private key (PKCS#8) sealed with the master key, its public JWK in clear.
-- The key with `retired_at` NULL signs; retired keys stay published in the JWKS so that tokens
-- signed before a rotation still verify.
CREATE TABLE oidc_signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    private_enc TEXT NOT NULL,
    public_jwk  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

-- Authorization codes: single use (taken with DELETE … RETURNING), a minute of life, and only
-- the SHA-256 of the code is stored, so a database read does not hand out usable codes.
CREATE TABLE oidc_codes (
    code_hash      TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    user_id        BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    nonce          TEXT,
    code_challenge TEXT NOT NULL,
    auth_time      BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX oidc_codes_expires ON oidc_codes (expires_at);

-- Access tokens the provider issued (opaque, stored as SHA-256), for /oauth2/userinfo.
CREATE TABLE oidc_access_tokens (
    token_hash TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX oidc_access_tokens_expires ON oidc_access_tokens (expires_at);

-- Log-ins through the external provider in progress: the `state` (as SHA-256) that ties the
-- callback to the start, with its nonce, the sealed PKCE verifier and where the portal goes
-- next. Single use, minutes of life; kept in the database so any node can take the callback.
CREATE TABLE oidc_login_states (
    state_hash   TEXT PRIMARY KEY,
    nonce        TEXT NOT NULL,
    verifier_enc TEXT NOT NULL,
    return_to    TEXT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX oidc_login_states_expires ON oidc_login_states (expires_at);
