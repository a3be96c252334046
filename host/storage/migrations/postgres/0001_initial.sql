-- Lotus schema, PostgreSQL flavour. Keep it identical to ../sqlite/0001_initial.sql except for
-- the id columns: times are BIGINT Unix milliseconds, JSON is TEXT and flags are BIGINT 0/1,
-- because that is what sqlx's Any driver can carry on both back ends.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE products (
    product_key          TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    node_type            TEXT NOT NULL,
    data_format          TEXT NOT NULL,
    dynamic_registration BIGINT NOT NULL,
    allow_unregistered   BIGINT NOT NULL,
    replay_window_secs   BIGINT,
    description          TEXT NOT NULL,
    secret_enc           TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX products_page ON products (created_at, product_key);

CREATE TABLE thing_models (
    product_key TEXT NOT NULL REFERENCES products (product_key) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    tsl         TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (product_key, version)
);

CREATE TABLE topic_classes (
    id          BIGSERIAL PRIMARY KEY,
    product_key TEXT NOT NULL REFERENCES products (product_key) ON DELETE CASCADE,
    template    TEXT NOT NULL,
    operation   TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (product_key, template)
);

-- No ON DELETE: a product with devices cannot be deleted.
CREATE TABLE devices (
    product_key         TEXT NOT NULL REFERENCES products (product_key),
    device_name         TEXT NOT NULL,
    nickname            TEXT,
    secret_enc          TEXT NOT NULL,
    enabled             BIGINT NOT NULL DEFAULT 1,
    online              BIGINT NOT NULL DEFAULT 0,
    first_online_at     BIGINT,
    last_online_at      BIGINT,
    last_offline_at     BIGINT,
    last_offline_reason TEXT,
    tags                TEXT NOT NULL DEFAULT '{}',
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (product_key, device_name)
);
CREATE INDEX devices_product_page ON devices (product_key, created_at, device_name);
CREATE INDEX devices_page ON devices (created_at, product_key, device_name);
CREATE INDEX devices_online ON devices (online) WHERE online = 1;

CREATE TABLE device_status_log (
    id          BIGSERIAL PRIMARY KEY,
    product_key TEXT NOT NULL,
    device_name TEXT NOT NULL,
    online      BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX device_status_log_device ON device_status_log (product_key, device_name, at);

CREATE TABLE property_latest (
    product_key TEXT NOT NULL,
    device_name TEXT NOT NULL,
    identifier  TEXT NOT NULL,
    value       TEXT NOT NULL,
    num         DOUBLE PRECISION,
    ts          BIGINT NOT NULL,
    PRIMARY KEY (product_key, device_name, identifier)
);

CREATE TABLE property_history (
    product_key TEXT NOT NULL,
    device_name TEXT NOT NULL,
    identifier  TEXT NOT NULL,
    ts          BIGINT NOT NULL,
    value       TEXT NOT NULL,
    num         DOUBLE PRECISION
);
CREATE INDEX property_history_series ON property_history (product_key, device_name, identifier, ts);

CREATE TABLE device_events (
    product_key TEXT NOT NULL,
    device_name TEXT NOT NULL,
    identifier  TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    params      TEXT NOT NULL,
    ts          BIGINT NOT NULL
);
CREATE INDEX device_events_device ON device_events (product_key, device_name, ts);

CREATE TABLE shadows (
    product_key         TEXT NOT NULL,
    device_name         TEXT NOT NULL,
    desired             TEXT NOT NULL,
    reported            TEXT NOT NULL,
    version             BIGINT NOT NULL,
    desired_updated_at  BIGINT,
    reported_updated_at BIGINT,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (product_key, device_name)
);

CREATE TABLE downlinks (
    product_key   TEXT NOT NULL,
    device_name   TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    method        TEXT NOT NULL,
    params        TEXT NOT NULL,
    status        TEXT NOT NULL,
    reply_code    BIGINT,
    reply_data    TEXT,
    reply_message TEXT,
    created_at    BIGINT NOT NULL,
    replied_at    BIGINT,
    PRIMARY KEY (product_key, device_name, message_id)
);
CREATE INDEX downlinks_created ON downlinks (created_at);
