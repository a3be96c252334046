-- Organisations and administrative regions: the `lotus.api` policy decides what a user may do
-- with a product or device from the user's scope and the resource's. A region is a path in the
-- city's tree (`/` the whole city, `/hz/xihu` a district). Existing rows get the whole city and
-- no organisation, which is what they had before scopes existed.
-- Keep it identical to the other database's 0006 file.

ALTER TABLE users ADD COLUMN org TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN region TEXT NOT NULL DEFAULT '/';
ALTER TABLE products ADD COLUMN org TEXT NOT NULL DEFAULT '';
ALTER TABLE products ADD COLUMN region TEXT NOT NULL DEFAULT '/';
-- NULL: the device is where its product is.
ALTER TABLE devices ADD COLUMN region TEXT;

-- Data permission levels (model admin, data admin, read-write, read-only, none) a user holds on
-- a product's data, each with an optional expiry; the `lotus.data.fields` policy turns them
-- into which fields a read returns, masked or removed.
CREATE TABLE data_grants (
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    product_key TEXT NOT NULL REFERENCES products (product_key) ON DELETE CASCADE,
    level       TEXT NOT NULL,
    expires_at  BIGINT,
    granted_by  TEXT NOT NULL,
    granted_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, product_key)
);
