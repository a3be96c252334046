-- Application credentials: MQTT logins for applications (ISV apps, city dashboards) that may
-- subscribe (and, where granted, publish) only within their granted topic filters. The secret
-- is sealed with the node's master key like device secrets; grants are JSON
-- `[{"filter": "...", "actions": ["subscribe"|"publish"]}]`. Keep it identical to
-- ../sqlite/0002_app_credentials.sql except for the id column.

CREATE TABLE app_credentials (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    username   TEXT NOT NULL UNIQUE,
    secret_enc TEXT NOT NULL,
    grants     TEXT NOT NULL,
    enabled    BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX app_credentials_page ON app_credentials (created_at, id);
