-- The city's administrative regions, its organisations and the custom roles administrators
-- define (CFG-2). Scopes (users, products, devices) already hold region paths and organisation
-- ids as plain text; these tables name them and arrange them in trees, and a node without
-- entries keeps accepting any well-formed region, as it did before they existed.
-- Same schema as the other database's 0013 file.

-- A region's parent is implied by its path (`/hz/xihu` is below `/hz`); `/` is the whole city
-- and is never stored. `code` is the national administrative division code (e.g. 330106).
CREATE TABLE regions (
    path       TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    code       TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- `id` is what users' and products' `org` holds; `parent` (another organisation's id, NULL at
-- the top) makes the tree; `region` is where the organisation works.
CREATE TABLE orgs (
    id         TEXT PRIMARY KEY,
    parent     TEXT REFERENCES orgs (id),
    name       TEXT NOT NULL,
    region     TEXT,
    contact    TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX orgs_parent ON orgs (parent);

-- Custom roles: a name users hold like a built-in role, and the `<kind>.<verb>` actions it
-- permits within the holder's scope (JSON array), passed to the `lotus.api` policy.
CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    permissions TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
