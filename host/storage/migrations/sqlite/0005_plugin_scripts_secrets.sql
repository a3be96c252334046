-- Vendor scripts and operator secrets of plugins.
-- `plugin_versions.script`: a codec installed from a vendor's JavaScript (Alibaba or ChirpStack
-- style) stores the script with the version it belongs to, so an upgrade or a rollback swaps
-- the script together with the component that runs it (the script runner).
-- `plugin_secrets`: named credentials an operator configures for a plugin (an SMS gateway key,
-- a webhook token), encrypted under the master key; the API never returns a value, the plugin
-- reads it through the `secrets` capability.
-- Keep it identical to the other database's 0005 file.

ALTER TABLE plugin_versions ADD COLUMN script TEXT;

CREATE TABLE plugin_secrets (
    plugin_id  TEXT NOT NULL REFERENCES plugins (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    value_enc  TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (plugin_id, name)
);
