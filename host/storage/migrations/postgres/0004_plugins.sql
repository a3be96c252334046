-- Wasm plugins: every uploaded version is kept (with its manifest and component) so that an
-- upgrade can be rolled back with one call and a restarted node reloads exactly what ran.
-- `plugin_kv` is each plugin's private state (the `kv` host interface); `dead_letters` keeps
-- every message a plugin failed on, with the reason, so nothing is dropped silently;
-- `product_codecs` binds a `dataFormat: custom` product to the codec plugin that decodes it.
-- Keep it identical to ../sqlite/0004_plugins.sql except for BYTEA (BLOB) and the id column.

CREATE TABLE plugins (
    id             TEXT PRIMARY KEY,
    world          TEXT NOT NULL,
    active_version TEXT NOT NULL,
    enabled        BIGINT NOT NULL DEFAULT 1,
    -- "active", or "suspended" with the reason in status_reason.
    status         TEXT NOT NULL,
    status_reason  TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

CREATE TABLE plugin_versions (
    plugin_id    TEXT NOT NULL REFERENCES plugins (id) ON DELETE CASCADE,
    version      TEXT NOT NULL,
    manifest     TEXT NOT NULL,
    wasm         BYTEA NOT NULL,
    sha256       TEXT NOT NULL,
    size         BIGINT NOT NULL,
    installed_at BIGINT NOT NULL,
    installed_by TEXT NOT NULL,
    PRIMARY KEY (plugin_id, version)
);

CREATE TABLE plugin_kv (
    plugin_id TEXT NOT NULL REFERENCES plugins (id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     BYTEA NOT NULL,
    PRIMARY KEY (plugin_id, key)
);

-- No foreign key to plugins: dead letters outlive a removed plugin, they are the evidence.
CREATE TABLE dead_letters (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    plugin_id   TEXT NOT NULL,
    product_key TEXT NOT NULL,
    device_name TEXT NOT NULL,
    topic       TEXT NOT NULL,
    payload     BYTEA NOT NULL,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX dead_letters_plugin ON dead_letters (plugin_id, id);
CREATE INDEX dead_letters_product ON dead_letters (product_key, id);

CREATE TABLE product_codecs (
    product_key TEXT PRIMARY KEY REFERENCES products (product_key) ON DELETE CASCADE,
    plugin_id   TEXT NOT NULL REFERENCES plugins (id),
    updated_at  BIGINT NOT NULL
);
