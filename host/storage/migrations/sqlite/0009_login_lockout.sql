-- Lock-out after repeated failed log-ins (MLPS level 3): consecutive failures since the last
-- successful log-in, and until when the account refuses log-ins. Existing users start clean.
-- Keep it identical to the other database's 0009 file.

ALTER TABLE users ADD COLUMN failed_logins BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked_until BIGINT;
