-- The operators' portal: what a user says about themselves in the personal center, and the
-- platform's settings (its style: title, theme colour, logo, log-in background) as keys and
-- values, so that a setting added later needs no migration. NULL: not given. Existing users
-- have given nothing.
-- Keep it identical to the other database's 0008 file.

ALTER TABLE users ADD COLUMN display_name TEXT;
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN phone TEXT;

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
