-- The app registry: ISV apps and city dashboards that call the REST API with signed requests
-- and that users open from the app center with single sign-on. `client_id` is the public id
-- (the HMAC key id and the OpenID Connect client_id); the secret is sealed with the node's
-- master key, bound to the client_id. `scopes` is a JSON array of API actions the app may call,
-- `resources` a JSON object of what it is granted (products, devices, regions, dataModels,
-- eventTypes, topics), `redirect_uris` and `open_roles` JSON arrays (OpenID Connect, the app
-- center). Keep it identical to ../sqlite/0011_apps.sql except for the id column.

CREATE TABLE apps (
    id            BIGSERIAL PRIMARY KEY,
    client_id     TEXT NOT NULL UNIQUE,
    secret_enc    TEXT NOT NULL,
    name          TEXT NOT NULL,
    app_type      TEXT NOT NULL,
    icon          TEXT,
    url           TEXT,
    vendor        TEXT,
    description   TEXT,
    status        TEXT NOT NULL DEFAULT 'offline',
    org           TEXT NOT NULL DEFAULT '',
    region        TEXT NOT NULL DEFAULT '/',
    scopes        TEXT NOT NULL DEFAULT '[]',
    resources     TEXT NOT NULL DEFAULT '{}',
    redirect_uris TEXT NOT NULL DEFAULT '[]',
    open_roles    TEXT NOT NULL DEFAULT '[]',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX apps_page ON apps (created_at, id);
