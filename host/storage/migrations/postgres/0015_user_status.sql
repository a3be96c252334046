-- Accounts an administrator disabled (someone left the department: their log-in stops at
-- once) and passwords an administrator set, which the user is asked to replace with their
-- own at the next log-in (MLPS level 3). Existing users stay active with their own passwords.
-- Keep it identical to the other database's 0015 file.

-- When the account was disabled; NULL while it is active.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
-- When an administrator last reset the password; NULL once the user has chosen their own.
ALTER TABLE users ADD COLUMN password_reset_at BIGINT;
